"""Concurrent generations of one in-process model, batched: every running answer advances by one token per forward
pass, and a request that arrives while others run joins at the next step instead of waiting for them to finish.

Why our own loop and not transformers' continuous batching (`generate_batch` / `init_continuous_batching`): its
logits processors come from one generation config for the whole batch, and per request it only takes the few
processors it has a batched version of (temperature, top-k, top-p). Ours are stateful per answer and need the
answer's own tokens (the repetition penalty over the answer only, RefusalThreshold, QuoteConstraint), so here each
row keeps its own `LogitsProcessorList` and is called with its own unpadded token ids, exactly as `generate` would.

How rows share one key/value cache: a new request is prefilled alone (its prompt is most of the work, and
prefilling it with others would only pad it), then its cache is left-padded to the batch's length (or the batch's to
its) and concatenated along the batch dimension; each row's position ids count only its real tokens. Finished or
abandoned rows are dropped from the cache, and columns that are padding for every remaining row are cut off.

Why attention runs row by row (RAGGED_SDPA): the linear layers give each row exactly what it gets alone, but
attention over a left-padded cache, even masked, sums in a different order; the 4-bit layers (bitsandbytes on CPU)
amplify that rounding to ~0.2 in the logits (measured), enough to change greedy answers. So in a decode step each
row attends to its own unpadded slice of the cache with the very call it would get alone: a batched answer is the
same, token for token, as the answer generated alone.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

BATCH_THREAD = "groundwork-generate"
RAGGED_SDPA = "groundwork_ragged_sdpa"  # the attention implementation the batched model runs with


def _ragged_sdpa(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa attention, except that a decode step of several rows runs each row on its own cache
    slice (its padding cut off, no mask), as it would run alone; everything else is plain sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or attention_mask is None or attention_mask.dim() != 4:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    last = attention_mask[:, 0, -1, :]
    visible = last == 0 if last.dtype.is_floating_point else last  # an additive mask or a boolean one
    starts = visible.long().argmax(dim=-1).tolist()  # each row's first real column
    rows = [sdpa_attention_forward(module, query[i:i + 1], key[i:i + 1, :, start:], value[i:i + 1, :, start:], None,
                                   **kwargs)[0] for i, start in enumerate(starts)]
    import torch

    return torch.cat(rows, dim=0), None


def use_ragged_attention(model) -> None:
    """Run `model` with RAGGED_SDPA if it runs with sdpa (unchanged for any call but a batched decode step)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    if model.config._attn_implementation != "sdpa":
        return
    AttentionInterface.register(RAGGED_SDPA, _ragged_sdpa)
    AttentionMaskInterface.register(RAGGED_SDPA, sdpa_mask)
    model.set_attn_implementation(RAGGED_SDPA)


@dataclass(eq=False)
class Row:
    """One answer being generated: its tokens so far, how to choose the next one, and where the pieces go."""

    tokens: list[int]  # the prompt, then each generated token
    max_new_tokens: int
    temperature: float
    processors: object  # a transformers LogitsProcessorList, this row's own (they keep per-answer state)
    streamer: object  # a transformers TextIteratorStreamer: put(ids) for each token, end() once
    generated: int = 0
    abandoned: threading.Event = field(default_factory=threading.Event)  # set by the reader that went away
    finished: threading.Event = field(default_factory=threading.Event)  # set once the loop let go of the row
    error: BaseException | None = None


class BatchedGeneration:
    """The generation loop of one model: a thread that runs while there are rows, one forward pass per step.

    `lock` is held around each forward pass, so that other uses of the model (scoring) interleave between steps.
    At most `max_rows` answers are in the batch; later requests wait (in order) for a free row.
    """

    def __init__(self, model, eos_token_ids: set[int], lock: threading.Lock, max_rows: int = 8) -> None:
        self.model, self.eos, self.lock, self.max_rows = model, eos_token_ids, lock, max_rows
        use_ragged_attention(model)
        self._changed = threading.Condition()
        self._waiting: list[Row] = []
        self._rows: list[Row] = []  # in the order of the cache's batch dimension
        self._cache = None  # a transformers DynamicCache shared by the rows
        self._mask = None  # [rows, cached columns]: 1 for a real token, 0 for left padding
        self._worker: threading.Thread | None = None

    def submit(self, row: Row) -> None:
        with self._changed:
            self._waiting.append(row)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, daemon=True, name=BATCH_THREAD)
                self._worker.start()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Join the loop's thread if nothing is left to generate (it then ends by itself)."""
        with self._changed:
            worker = None if (self._waiting or self._rows) else self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    # --- the loop ------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._changed:
                self._drop([row for row in self._rows if row.abandoned.is_set()])
                for row in [row for row in self._waiting if row.abandoned.is_set()]:  # gone before their turn
                    self._waiting.remove(row)
                    self._finish(row)
                joining = self._waiting[: max(self.max_rows - len(self._rows), 0)]
                del self._waiting[: len(joining)]
                if not joining and not self._rows:
                    self._worker = None
                    return
            try:
                for row in joining:
                    if not row.abandoned.is_set():
                        self._prefill(row)
                    else:
                        self._finish(row)
                if self._rows:
                    self._step()
            except BaseException as exc:  # every row in flight gets the error; the loop goes on for later ones
                for row in [*self._rows, *joining]:
                    row.error = row.error or exc
                with self._changed:
                    self._drop(list(self._rows))
                for row in joining:
                    self._finish(row)

    def _prefill(self, row: Row) -> None:
        import torch

        ids = torch.tensor([row.tokens], device=self.model.device)
        with self.lock, torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        if self._choose(row, out.logits[0, -1]):
            self._finish(row)
            return
        mask = torch.ones((1, ids.shape[1]), dtype=torch.long, device=ids.device)
        with self._changed:
            self._join(row, out.cache, mask)

    def _step(self) -> None:
        """One token for every row of the batch."""
        import torch

        last = torch.tensor([[row.tokens[-1]] for row in self._rows], device=self.model.device)
        positions = self._mask.sum(dim=1, keepdim=True)  # each row's own count of real tokens so far
        mask = torch.cat([self._mask, torch.ones_like(positions)], dim=1)
        with self.lock, torch.inference_mode():
            out = self.model(input_ids=last, attention_mask=mask, position_ids=positions, cache=self._cache,
                             use_cache=True)
        self._mask = mask
        done = [row for i, row in enumerate(self._rows) if self._choose(row, out.logits[i, -1])]
        with self._changed:
            self._drop(done)

    def _choose(self, row: Row, logits) -> bool:
        """Pick the row's next token from its logits (its processors first) and stream it; True when it is done."""
        import torch

        if row.abandoned.is_set():
            return True
        ids = torch.tensor([row.tokens], device=logits.device)
        scores = row.processors(ids, logits.float().unsqueeze(0))  # float32, as generate() scores
        if row.temperature > 0:
            token = int(torch.multinomial(torch.softmax(scores / row.temperature, dim=-1), 1)[0, 0])
        else:
            token = int(scores.argmax(dim=-1)[0])
        row.tokens.append(token)
        row.generated += 1
        row.streamer.put(torch.tensor([token]))
        return token in self.eos or row.generated >= row.max_new_tokens

    # --- the shared cache (called with self._changed held) ----------------------------------------------------
    def _join(self, row: Row, cache, mask) -> None:
        import torch

        if self._cache is None:
            self._cache, self._mask, self._rows = cache, mask, [row]
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for ours, theirs in zip(self._cache.layers, cache.layers):
            ours.keys = torch.cat([_pad_left(ours.keys, width, 2), _pad_left(theirs.keys, width, 2)], dim=0)
            ours.values = torch.cat([_pad_left(ours.values, width, 2), _pad_left(theirs.values, width, 2)], dim=0)
        self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)], dim=0)
        self._rows.append(row)

    def _drop(self, rows: list[Row]) -> None:
        import torch

        if not rows:
            return
        keep = [i for i, row in enumerate(self._rows) if row not in rows]
        for row in rows:
            self._finish(row)
        if not keep:
            self._cache = self._mask = None
            self._rows = []
            return
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask[index]
        cut = int((mask.sum(dim=0) > 0).long().argmax())  # the first column some remaining row uses
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, cut:]
            layer.values = layer.values[index, :, cut:]
        self._mask = mask[:, cut:]
        self._rows = [self._rows[i] for i in keep]

    @staticmethod
    def _finish(row: Row) -> None:
        if not row.finished.is_set():
            row.streamer.end()
            row.finished.set()


def _pad_left(tensor, width: int, dim: int):
    """Zeros in front of `tensor` along `dim` up to `width`."""
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim=dim)
