"""The `--hub DIR` parts of the `pplug` subcommands (`pplug.cli.commands` calls these): the models of
`pplug generate --hub`, the adapter change `pplug user add-history --hub` prints, and `pplug hub retrain`."""

from __future__ import annotations

from typing import Any


def generate_models(args: Any, ckpt: Any, llm: Any, load_model: Any) -> tuple[Any, Any]:
    """(model, hub) for `pplug generate`: `--hub` alone -> the hub itself (`lora-hub`); `--checkpoint` and
    `--hub` -> the PPlug model and the hub on its LLM (`pplug+lora-hub`); `--checkpoint` alone -> (model, None)."""
    from .methods import load_hub
    from .files import resolve_hub
    from pplug.modeling.llm import FrozenLLM
    from .files import read_hub_json

    if ckpt is None:
        config = read_hub_json(resolve_hub(args.hub))["config"]
        llm = llm or FrozenLLM(config.base_model_name_or_path, dtype=args.dtype or "auto", device=args.device)
        hub = load_hub(args.hub, llm)
        return hub, None
    model = load_model(ckpt, args, llm=llm)
    if not args.hub:
        return model, None
    return model, load_hub(args.hub, model.llm, model.history_encoder)


def user_hub_rows(args: Any, model: Any, items: list[dict]) -> Any:
    """`pplug user generate --hub`: a context running the user's row through their retrieved adapters
    (`pplug+lora-hub`); without `--hub`, one that changes nothing."""
    import contextlib

    from .methods import hub_method, load_hub, method_rows

    if not getattr(args, "hub", None):
        return contextlib.nullcontext()
    hub = load_hub(args.hub, model.llm, model.history_encoder)
    return method_rows(hub, hub_method(model, hub), [items])


def hub_task(hub_dir: str) -> str:
    """The task a hub (or hub run folder) was trained for."""
    from .files import resolve_hub
    from .files import read_hub_json

    return read_hub_json(resolve_hub(hub_dir))["config"].task


def folder_retrieval(hub_dir: str, items: list[dict], encoder: Any) -> Any:
    """The retrieval of one history against a saved hub, reusing `encoder` when it is the hub's."""
    from .files import resolve_hub
    from .model import retrieve_from_folder
    from .files import read_hub_json

    want = read_hub_json(resolve_hub(hub_dir))["encoder"]
    same = want.get("identity") == encoder.identity and want.get("dim") == encoder.dim
    _, (got,) = retrieve_from_folder(hub_dir, [items], encoder=encoder if same else None)
    return got


def format_retrieval(r: Any) -> str:
    """"group-01 0.88, group-00 0.12"."""
    return ", ".join(f"{n} {w:.2f}" for n, w in zip(r.adapters, r.weights))


def adapter_change_line(before: Any, after: Any) -> str:
    """One line for `pplug user add-history --hub`: the adapters before -> after the new history."""
    same = before.adapters == after.adapters
    return (f"hub adapters: {format_retrieval(before)} -> {format_retrieval(after)} "
            f"({'unchanged' if same else 'changed'})")


def run_hub_retrain(args: Any) -> int:
    """`pplug hub retrain`: slow adaptation of a hub (`pplug.hub.adapt`), or `--rollback`."""
    import sys

    from pplug.core.checkpoints import serving_version
    from .adapt import retrain_hub, rollback_hub
    from .config import HUB_CONFIG_NAME
    from .train import HubTrainConfig
    from pplug.store import open_store

    if args.rollback:
        before = serving_version(args.hub, HUB_CONFIG_NAME)
        now = rollback_hub(args.hub)
        print(f"rolled back hub {args.hub}: serving {now} (was {before})")
        return 0
    train = HubTrainConfig(epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed)
    with open_store(args.store, create=False) as store:
        res = retrain_hub(store, args.hub, min_new=args.min_new, val_fraction=args.val_fraction, train_config=train,
                          metric=args.metric, base_model=args.base_model, device=args.device,
                          dtype=args.dtype or "auto", embedding_cache=args.embedding_cache,
                          log=lambda m: print(f"pplug hub retrain: {m}", file=sys.stderr))
    print(res.message)
    return 0


def add_retrain_parser(hub_sub: Any, device_args: Any) -> None:
    """The `pplug hub retrain` parser (its handler is `pplug hub`'s, `pplug.cli.commands.run_hub`)."""
    q = hub_sub.add_parser("retrain", help="retrain the serving hub's adapters on new interactions; promote if "
                                           "not worse (cron-safe); --rollback")
    q.add_argument("--hub", required=True, help="hub run folder (or hub folder): versions go beside its serving one")
    q.add_argument("--store", default=None,
                   help="user store: SQLite file or postgresql:// URL (default: as for `pplug user`)")
    q.add_argument("--rollback", action="store_true", help="serve the current hub version's parent again")
    q.add_argument("--min-new", type=int, default=32, help="new interactions needed to retrain (default: 32)")
    q.add_argument("--val-fraction", type=float, default=0.2, help="most recent share held out (default: 0.2)")
    q.add_argument("--metric", default=None, help="deciding figure (default: the task's main metric)")
    q.add_argument("--epochs", type=int, default=1)
    q.add_argument("--max-steps", type=int, default=None, help="optimizer steps per adapter at most")
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--lr", type=float, default=2e-4, help="peak learning rate of the LoRA weights (default: 2e-4)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--base-model", default=None, help="the frozen LLM (default: the hub's)")
    q.add_argument("--embedding-cache", default=None, help="embedding cache file (default: the shared pplug cache)")
    device_args(q)


__all__ = ["adapter_change_line", "add_retrain_parser", "folder_retrieval", "format_retrieval", "generate_models",
           "hub_task", "run_hub_retrain", "user_hub_rows"]
