"""Training: the generators (SFT / DPO with LoRA, TRL + PEFT) and the embedder (sentence-transformers).

- ``common``: the shared config of the generator stages (profiles ``cpu`` / ``paper``), model and
  data loading, checkpoints and resume, rank-0-only writes, the trained-model artifacts;
- ``sft``: supervised fine-tuning (junior, revisor), loss on the completion tokens only;
- ``dpo``: preference optimisation (senior), started from the junior's adapter, reference = the
  frozen junior;
- ``lora_gguf``: a PEFT LoRA adapter -> a GGUF LoRA adapter that llama.cpp loads (``lora_path``);
- ``embedder``: contrastive fine-tuning (InfoNCE over in-batch and hard negatives), encoder or
  decoder (LoRA, last-token pooling) embedders;
- ``launch``: one training stage of a run directory under ``accelerate launch`` (multi-GPU,
  DeepSpeed ZeRO-3, or several CPU processes).

Heavy imports (torch, transformers, trl, peft, sentence-transformers) happen inside functions.
"""
