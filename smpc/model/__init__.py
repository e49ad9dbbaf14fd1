"""What a model becomes: a converted program that travels as data.

program         the program type (Program, InputSpec) and its nodes' labels
convert         a PyTorch model -> a Program (torch.export, checked op by op)
ops             what each op of a program computes on shares (the op table)
execute         run a program, on plain tensors or on shares
program_format  a program on disk: its graph (JSON) and constants (safetensors)
model_dir       the signed model directory (manifest, weights, signature): the format
pack            programs packed for every batch and length (smpc.pack), and loaded back
buckets         the (rows, sequence length) shapes a packed directory holds
calibrate       the calibration file and the checks that use it
ranges          the input ranges each approximation covers
huggingface     Hugging Face models from a Config or a local save_pretrained folder
zoo             the built-in architectures (digits CNN, LeNet-5, ...)
owner           the owner's steps that combine the above: pack a folder, calibrate
"""

__all__ = [
    "buckets",
    "calibrate",
    "convert",
    "execute",
    "huggingface",
    "model_dir",
    "ops",
    "owner",
    "pack",
    "program",
    "program_format",
    "ranges",
    "zoo",
]
