"""MkDocs hook: render the reStructuredText math of the docstrings (torchmetrics style) with KaTeX.

The docstrings write formulas as ``.. math::`` blocks and ``:math:`...``` roles, which stay
readable in ``help()`` and in the source. mkdocstrings renders them as a paragraph plus a code
block, and as ``:math:`` plus inline code; this hook turns both into the ``arithmatex`` markup that
``docs/javascripts/katex.js`` typesets.
"""

from __future__ import annotations

import re
from typing import Any

_BLOCK = re.compile(
    r"<p>\.\. math::</p>\s*"
    r'<div class="highlight"><pre><span></span><code>(.*?)</code></pre></div>',
    re.S,
)
_ROLE = re.compile(r":math:<code>(.*?)</code>", re.S)


def on_page_content(html: str, **kwargs: Any) -> str:
    """Replace the rendered reStructuredText math markup by display and inline KaTeX markup."""
    html = _BLOCK.sub(lambda m: f'<div class="arithmatex">\\[{m.group(1).strip()}\\]</div>', html)
    return _ROLE.sub(lambda m: f'<span class="arithmatex">\\({m.group(1)}\\)</span>', html)
