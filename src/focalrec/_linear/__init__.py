"""The fused output layer's parts, each on a screen; :mod:`focalrec.linear` is its public face.

- :mod:`focalrec._linear.plan`: the arguments checked, the targets, weights, divisor and chunks;
- :mod:`focalrec._linear.loop`: the chunk loop (matmul, the loss's kernel, the three gradients);
- :mod:`focalrec._linear.autograd`: the eager ``autograd.Function`` and the custom operator that
  ``torch.compile`` keeps in its graph;
- :mod:`focalrec._linear.init`: a rank's item range initialized as ``nn.Linear`` would the whole.
"""
