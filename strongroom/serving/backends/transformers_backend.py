"""The reference backend: Hugging Face transformers on the gateway's own worker threads.

Models are loaded once at start-up (``serving.models.load_served``): a registry base model, or
a stored fine-tune whose adapter is decrypted into memory by the store and attached to the
base there. Nothing is written to disk. Streaming decodes the token ids seen so far and hands
out the new, complete characters; stop sequences are honoured across chunk boundaries by
holding back a short tail.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from strongroom.errors import BadInput, NotFound
from strongroom.serving.backends.base import Generation, GenParams, OnText, apply_stop


class _Sink:
    """Collects decoded text, emits only what no stop sequence can still claim, cuts at a stop."""

    def __init__(self, stops: list[str], on_text: OnText | None, cancel: threading.Event) -> None:
        self.stops = stops
        self.on_text = on_text
        self.cancel = cancel
        self.text = ""
        self.sent = 0
        self.stopped = False
        self.hold = max((len(s) for s in stops), default=1) - 1

    def update(self, text: str) -> None:
        if self.stopped:
            return
        cut, hit = apply_stop(text, self.stops)
        self.text = cut
        if hit:
            self.stopped = True
            self.cancel.set()
            self._emit(len(cut))
        else:
            self._emit(max(self.sent, len(cut) - self.hold))

    def finish(self) -> None:
        self._emit(len(self.text))

    def _emit(self, upto: int) -> None:
        if upto > self.sent:
            piece = self.text[self.sent:upto]
            self.sent = upto
            if self.on_text is not None:
                self.on_text(piece)


class TransformersBackend:
    """Serves in-memory (model, tokenizer) pairs by name."""

    name = "transformers"

    def __init__(self, models: dict[str, tuple[Any, Any]]) -> None:
        if not models:
            raise BadInput("no model to serve")
        self._models = dict(models)

    def models(self) -> list[str]:
        return sorted(self._models)

    def token_counter(self, model: str) -> Callable[[str], int]:
        """The model's own token count, for the guards' input-token limit."""
        _, tok = self._get(model)
        return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])

    def _get(self, model: str) -> tuple[Any, Any]:
        try:
            return self._models[model]
        except KeyError:
            raise NotFound("model is not served here") from None

    def chat(self, model: str, messages: list[dict[str, str]], params: GenParams,
             on_text: OnText | None = None) -> Generation:
        m, tok = self._get(model)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._run(m, tok, text, params, on_text)

    def complete(self, model: str, prompt: str, params: GenParams,
                 on_text: OnText | None = None) -> Generation:
        m, tok = self._get(model)
        return self._run(m, tok, prompt, params, on_text)

    def _run(self, model: Any, tok: Any, text: str, params: GenParams,
             on_text: OnText | None) -> Generation:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        enc = tok(text, add_special_tokens=False, return_tensors="pt")
        n_prompt = int(enc["input_ids"].shape[1])
        sink = _Sink(params.stop, on_text, params.cancel)
        ids: list[int] = []
        special = set(getattr(tok, "all_special_ids", []) or [])

        class _Stream(BaseStreamer):
            first = True

            def put(self, value: Any) -> None:
                if self.first:  # generate() first hands over the prompt
                    self.first = False
                    return
                ids.extend(int(t) for t in value.reshape(-1).tolist())
                decoded = tok.decode([t for t in ids if t not in special], skip_special_tokens=True)
                if not decoded.endswith("\ufffd"):
                    sink.update(decoded)

            def end(self) -> None:
                pass

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                return torch.full((input_ids.shape[0],), params.cancel.is_set(), dtype=torch.bool)

        sample = bool(params.temperature)
        kwargs: dict[str, Any] = dict(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
            max_new_tokens=params.max_new_tokens, do_sample=sample,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            streamer=_Stream(), stopping_criteria=StoppingCriteriaList([_Cancel()]),
        )
        if sample:
            kwargs["temperature"] = params.temperature
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            if params.seed is not None and sample:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(params.seed)
                    out = model.generate(**kwargs)
            else:
                out = model.generate(**kwargs)
        new = out[0, n_prompt:].tolist()
        full = tok.decode(new, skip_special_tokens=True)
        sink.update(full)
        sink.finish()
        eos = tok.eos_token_id
        ended = bool(new) and new[-1] == eos
        finish = "stop" if sink.stopped or ended or len(new) < params.max_new_tokens else "length"
        return Generation(text=sink.text.strip() if on_text is None else sink.text,
                          prompt_tokens=n_prompt, completion_tokens=len(new),
                          finish_reason=finish)

    def close(self) -> None:
        self._models.clear()
