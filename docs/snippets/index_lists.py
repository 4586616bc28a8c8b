import torch

from focalrec import dense_to_index_list, index_list_to_dense

targets = torch.tensor([[4, 1, -1], [2, 2, 0]])  # row 1 lists item 2 twice: it counts once
dense = index_list_to_dense(targets, num_classes=5)  # (2, 5) bool, one column per item
print(dense.int())
back = dense_to_index_list(dense)  # ascending indices, padded with -1
print(back)
assert torch.equal(index_list_to_dense(back, num_classes=5), dense)
