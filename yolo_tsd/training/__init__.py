"""How the method runs inside Ultralytics.

The teacher, the training module, the loss, its running statistics, the checkpoint state, the trainer and its callbacks.
"""
