"""Training defaults shown by the command line, in a module that imports nothing (the CLI must start fast):
TrainOptions and `groundwork finetune` both take them from here. The default base model is
finetune.models.DEFAULT_MODEL."""

LORA_R = 16  # TrainOptions.lora_r: LoRA rank
