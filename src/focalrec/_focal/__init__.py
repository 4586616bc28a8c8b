"""The loss kernels behind one operator: the op (autograd, fake implementation, vmap), the
compiled CPU kernel (prebuilt or built at run time), the Triton kernel and the torch reference."""
