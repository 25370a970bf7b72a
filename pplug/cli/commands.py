"""What the `pplug` verbs share: the one-line error they raise (`CLIError`), the groups of flags several verbs
take (`ModelPlacement`: --device / --dtype; `CandidateDecoding`: the candidate decodings' settings) and loading a
checkpoint's model with them.

The groups are dataclasses: a verb's parameter of one of these types becomes its fields' flags
(`pplug.cli.signatures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pplug.decode.choose import DecodingSpec
    from pplug.modeling.model import PPlugModel


class CLIError(Exception):
    """An error to show the user as one line (exit code 2), without a traceback."""


@dataclass(frozen=True)
class ModelPlacement:
    """where the model runs

    Attributes:
        device: where to run: auto (cuda, then mps, then cpu; default), cuda, cuda:1, mps, cpu
        dtype: frozen LLM dtype (default: the checkpoint's; auto = bf16 where the device runs it fast)
    """

    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None


@dataclass(frozen=True)
class CandidateDecoding:
    """candidate decodings (generation tasks: mbr, preference, reward-mbr)

    Attributes:
        num_samples: sampled candidates per row besides greedy (default: 8)
        temperature: sampling temperature (default: 0.7)
        top_p: nucleus mass kept when sampling (default: 0.95)
        preference_weight: w in (1 - w) * consensus + w * similarity to the user's past outputs (preference) or
            w * the user's facet reward (reward-mbr) (default: 0.5)
        utility: MBR utility between candidates (default: rouge1)
        sampling_seed: sampling seed (each row's follows its id)
        preference_models: reward-mbr: folder of facet preference models (`pplug prefs train --out`)
    """

    num_samples: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    preference_weight: float = 0.5
    utility: Literal["rouge1", "rougeL", "embedding"] = "rouge1"
    sampling_seed: int = 0
    preference_models: str | None = None

    def spec(self, num_beams: int = 1) -> DecodingSpec:
        """These settings as a `pplug.decode.choose.DecodingSpec`; `--num-beams` > 1 also sets the width of
        the `beam` decoding (else it keeps its own default)."""
        from pplug.decode.choose import DecodingSpec

        return DecodingSpec(num_samples=self.num_samples, temperature=self.temperature, top_p=self.top_p,
                            preference_weight=self.preference_weight, utility=self.utility, seed=self.sampling_seed,
                            preference_models=self.preference_models,
                            **({"num_beams": num_beams} if num_beams > 1 else {}))


def load_model(checkpoint: Any, placement: ModelPlacement, llm: Any = None) -> PPlugModel:
    """The model of a resolved checkpoint folder on `--device`, in `--dtype` when given, ready to decode."""
    from pplug.modeling.model import PPlugModel

    overrides = {"torch_dtype": placement.dtype} if placement.dtype else {}
    return PPlugModel.from_pretrained(checkpoint, llm=llm, device=placement.device, **overrides).eval()


__all__ = ["CLIError", "CandidateDecoding", "ModelPlacement", "load_model"]
