"""The baseline every bench ratio is measured against: a user's own forward and backward pass."""
from mxnet import autograd, nd


def user_backward(net, x) -> None:
    """Forward and backward as a user writes them: parameter gradients computed (grad_req 'write'), plus the input
    gradient, for the predicted class. train_mode=False keeps Dropout off, as in inference and as in gluoncam's
    recorded pass."""
    xg = x.copy()
    xg.attach_grad()
    with autograd.record(train_mode=False):
        out = net(xg)
    out.backward(nd.one_hot(out.argmax(axis=1), out.shape[1]))
    nd.waitall()
