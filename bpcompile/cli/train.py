"""`bpcompile train NET.bp --data DATA.npz`: the command-line face of `training.fit`.

Prints a line every few epochs (under a progress bar when the terminal shows one), saves
params and optimizer state atomically at the end of an epoch (at most every SAVE_INTERVAL
seconds) and when the run ends, and exits 0 when done, 130 when Ctrl-C stopped it (after
saving), 2 when a step was refused (after saving the last good params) or the input was
bad.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from .. import atomic
from ..api import compile_file
from ..errors import BPError, BPTypeError
from ..inspect.health import HealthReport
from ..runtime.net import CompiledNet
from ..runtime.params_file import META, read_archive
from ..training import checkpoint, cluster, plot
from ..training.dataset import Dataset, load, npy_files
from ..training.loop import Epoch, Split, TrainResult, batches, fit, split
from ..training.metrics import accuracy

INTERRUPTED = 130  # the shell's status for a program stopped by SIGINT
# The least time between two checkpoints taken at the ends of epochs (one is always
# written when the run ends, is stopped or fails): a crash loses at most this much plus an
# epoch, and an epoch of four rows is not slowed by a file written and synced after each.
SAVE_INTERVAL = 10.0


HELP = "train on an .npz or .csv: minibatches, progress bar, checkpoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DATA",
                        help=".npz with arrays named like the network's inputs and targets, "
                             "or .csv with columns NAME or NAME_0, NAME_1, ...")
    parser.add_argument("--epochs", type=int, default=10,
                        help="train until this many epochs are done in all (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per step")
    parser.add_argument("--backend", choices=("numpy", "llvm"), default="numpy")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the init, the shuffles and the validation split")
    parser.add_argument("--validation", type=float, default=0.0, metavar="FRACTION",
                        help="hold out this fraction of the rows; report their loss and, "
                             "for classifiers, accuracy")
    parser.add_argument("--out", metavar="PARAMS.npz",
                        help="where params and optimizer state go (default NET.params.npz)")
    parser.add_argument("--resume", metavar="PARAMS.npz",
                        help="continue from a saved run (its params, state, epoch and seed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even when it holds another network's run or a "
                             "run further along")
    parser.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                        help="stop once the validation loss has not improved for PATIENCE "
                             "epochs, keeping the best epoch's params in --out (needs "
                             "--validation)")
    parser.add_argument("--plot", metavar="LOSS.png", help="draw the loss curve (matplotlib)")
    parser.add_argument("--history", metavar="HISTORY.csv", help="write each epoch's figures")
    parser.add_argument("--diagnose", action="store_true",
                        help="report each param's gradient norm per epoch; warn when "
                             "gradients vanish or explode")
    parser.add_argument("--every", type=int, metavar="K",
                        help="print a line every K epochs (default: about 20 lines a run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--dask", metavar="ADDRESS",
                        help="train data-parallel on a Dask cluster: a scheduler's address "
                             "(tcp://HOST:PORT), or local:N to start N worker processes here")


# Options that count something, and so must be at least 1.
COUNTS = {"epochs": "--epochs", "batch_size": "--batch-size", "every": "--every",
          "early_stopping": "--early-stopping"}
# A loss this many times its first epoch's is diverging: say so, and what usually helps.
GROWTH_WARNING = 100.0


def _check_options(args: argparse.Namespace) -> None:
    """Refuse bad options, and missing extras, before anything is compiled or trained."""
    if args.plot:
        plot.require_matplotlib()
    for name, option in COUNTS.items():
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BPTypeError(f"{option} must be at least 1, not {value}")
    if args.dask and (args.validation or args.diagnose or args.early_stopping):
        raise BPTypeError("--validation, --diagnose and --early-stopping are not available "
                          "with --dask yet")
    if args.early_stopping and not args.validation:
        raise BPTypeError("--early-stopping watches the validation loss: give --validation "
                          "FRACTION too")
    if args.dask:
        cluster.require()


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    net = compile_file(args.net, backend=args.backend, dtype=args.dtype)
    data = load(args.data, net.signature)
    start = checkpoint.load(args.resume, net) if args.resume else None
    seed = start.seed if start is not None and start.seed is not None else args.seed
    parts = split(data, args.validation, seed)
    out = Path(args.out) if args.out else Path(f"{Path(args.net).stem}.params.npz")
    _refuse_to_overwrite(args, net, out)
    steps_per_epoch = len(batches(parts.train, args.batch_size, seed, 0))
    print(f"training {net.name} ({args.backend}, {args.dtype}) on {_describe(parts)}: "
          f"{steps_per_epoch} steps of {args.batch_size} rows an epoch, "
          f"optimizer {net.signature.optimizer.text or net.signature.optimizer.kind}")
    if start is not None:
        print(f"resuming {args.resume}: epoch {start.progress.epoch} done, "
              f"{start.progress.step} steps into the next")
        if start.progress.epoch >= args.epochs:
            print(f"nothing to do: --epochs {args.epochs} are done already")
            return 0
        now = checkpoint.optimizer_text(net)
        if start.optimizer is not None and start.optimizer != now:
            print(f"note: the saved run used {start.optimizer}; continuing with {now}")
    clock = {"shown": time.perf_counter(), "saved": time.perf_counter()}
    flagged: dict[str, list[int]] = {}
    every = args.every or max(1, args.epochs // 20)

    def on_epoch(record: Epoch, result: TrainResult) -> None:
        now = time.perf_counter()
        if not clock.get("warned") and _diverging(net, result, record):
            clock["warned"] = now
        if record.epoch % every == 0 or record.epoch in (1, args.epochs):
            tqdm.write(_epoch_line(record, args.epochs, now - clock["shown"]))
            if record.health is not None:
                tqdm.write(_health_line(record.health))
            clock["shown"] = now
        if record.health is not None:
            for layer, (_, status) in record.health.layers().items():
                if status != "ok":
                    flagged.setdefault(layer, []).append(record.epoch)
        if now - clock["saved"] >= SAVE_INTERVAL:  # and always when the run ends
            checkpoint.save(out, net, _kept(result, seed))
            clock["saved"] = now

    if args.dask:
        result = _train_on_cluster(args, net, data, start, seed, on_epoch)
    else:
        result = fit(net, parts.train, epochs=args.epochs, batch_size=args.batch_size,
                     seed=seed, validation=parts.validation, diagnose=args.diagnose,
                     start=start, progress_bar=not args.quiet, on_epoch=on_epoch,
                     patience=args.early_stopping)
    checkpoint.save(out, net, _kept(result, seed))
    if result.best is not None:
        stopped = f"stopped early after epoch {result.progress.epoch}: " \
            if result.stopped_early else ""
        print(f"{stopped}the best validation loss, {result.best.val_loss:.6g}, came in epoch "
              f"{result.best.epoch}; {out} holds that epoch's params")
    if result.history and result.history[-1].health is not None:
        _health_summary(result.history[-1].health, flagged)
    _write_outputs(args, net, result, start, steps_per_epoch)
    if result.error is not None:
        print(f"saved the last good params to {out}", file=sys.stderr)
        losses = result.step_losses
        if losses and losses[0] > 0 and max(losses) > GROWTH_WARNING * losses[0]:
            print(f"the loss grew from {losses[0]:.4g} to {max(losses):.4g} before that: a "
                  f"smaller learning rate{_lr(net)} usually helps", file=sys.stderr)
        raise result.error
    final = _kept(result, seed).params
    right = accuracy(net, final, parts.train)
    if right is not None:
        print(f"accuracy on the training rows: {100 * right:.2f}%")
    if result.interrupted:
        done = result.progress
        print(f"interrupted in epoch {done.epoch + 1}, after step {done.step}: saved to {out}; "
              f"continue with --resume {out}")
        return INTERRUPTED
    print(f"saved params to {out}")
    return 0


def _kept(result: TrainResult, seed: int) -> checkpoint.Checkpoint:
    """What --out keeps: the run as it stands, or with early stopping its best epoch."""
    return result.best.checkpoint if result.best is not None else result.checkpoint(seed)


def _refuse_to_overwrite(args: argparse.Namespace, net: CompiledNet, out: Path) -> None:
    """--out may replace a file of this network's runs that is not further along than this
    run will go; another network's params, or more epochs than --epochs, need --overwrite
    (or, to continue the run, --resume)."""
    if out.is_dir():
        raise BPTypeError(f"--out {out} is a folder; give the file the params go to")
    if args.overwrite or not out.exists() or \
            (args.resume and Path(args.resume).resolve() == out.resolve()):
        return
    advice = f"choose another --out, continue it with --resume {out}, or replace it with " \
             f"--overwrite"
    try:
        meta = read_archive(out, lambda name: name.startswith(META))
        if not meta:  # params alone (save_params): this network's if they load
            net.load_params(out)
    except BPError as error:
        raise BPTypeError(f"{out} exists and is not a run of network {net.name} ({error}); "
                          f"{advice}") from None
    network = str(meta[META + "network"]) if META + "network" in meta else net.name
    if network != net.name:
        raise BPTypeError(f"{out} holds a run of network {network}, not {net.name}; "
                          f"{advice}")
    epoch = int(meta[META + "epoch"]) if META + "epoch" in meta else 0
    if epoch > args.epochs:
        raise BPTypeError(f"{out} holds a run {epoch} epochs along, further than this one's "
                          f"--epochs {args.epochs}; {advice}")


def _diverging(net: CompiledNet, result: TrainResult, record: Epoch) -> bool:
    """Say so when the loss has grown by orders of magnitude since the first epoch."""
    first = result.history[0]
    if record.epoch == first.epoch or not first.loss > 0 or \
            not record.loss > GROWTH_WARNING * first.loss:
        return False
    tqdm.write(f"warning: the loss grew from {first.loss:.4g} in epoch {first.epoch} to "
               f"{record.loss:.4g} in epoch {record.epoch}: the run is diverging; a smaller "
               f"learning rate{_lr(net)} usually helps")
    return True


def _lr(net: CompiledNet) -> str:
    options = net.signature.optimizer.options
    return f" (now lr={options['lr']})" if "lr" in options else ""


def _write_outputs(args: argparse.Namespace, net: CompiledNet, result: TrainResult,
                   start: checkpoint.Checkpoint | None, steps_per_epoch: int) -> None:
    """The history CSV and the loss plot, when asked for."""
    if args.history:
        _write_history(Path(args.history), result.history, resumed=start is not None)
    if args.plot and result.history:
        epochs = [r.epoch for r in result.history]
        done = start.progress if start is not None else checkpoint.Progress()
        plot.loss_curve(args.plot, result.step_losses, steps_per_epoch, epochs,
                        [r.loss for r in result.history],
                        [r.val_loss for r in result.history], f"{net.name}: training loss",
                        first_step=done.epoch + done.step / steps_per_epoch)
        print(f"plotted the loss to {args.plot}")


def _train_on_cluster(args: argparse.Namespace, net: CompiledNet, data: Dataset,
                      start: checkpoint.Checkpoint | None, seed: int,
                      on_epoch: Callable[[Epoch, TrainResult], None]) -> TrainResult:
    """The same run with each step's gradient computed on the cluster. A folder of .npy
    files is read by the workers, chunk by chunk; other data goes out from here."""
    with cluster.start_client(args.dask) as client:
        workers = len(client.scheduler_info()["workers"])
        print(f"Dask cluster at {client.scheduler.address}: {workers} workers")
        arrays: dict[str, object] = dict(data.arrays)
        if Path(args.data).is_dir() and data.rows is not None:
            per_chunk = -(-data.rows // max(1, workers))
            for name, file in npy_files(Path(args.data), net.signature).items():
                if name in data.batched and data.arrays[name].ndim == \
                        len(net.signature.data[name]):
                    arrays[name] = cluster.lazy_npy(file, per_chunk)
        return cluster.train_on_cluster(
            client, net, arrays, epochs=args.epochs, batch_size=args.batch_size, seed=seed,
            start=start, progress_bar=not args.quiet, on_epoch=on_epoch)


def _describe(parts: Split) -> str:
    train = parts.train.rows
    if train is None:
        return parts.train.source
    held = f", {parts.validation.rows} held out" if parts.validation is not None else ""
    return f"{parts.train.source} ({train} rows{held})"


def _epoch_line(record: Epoch, epochs: int, seconds: float) -> str:
    width = len(str(epochs))
    text = f"epoch {record.epoch:>{width}}/{epochs}  loss {record.loss:.6g}"
    if record.val_loss is not None:
        text += f"  val_loss {record.val_loss:.6g}"
    if record.val_accuracy is not None:
        text += f"  val_acc {100 * record.val_accuracy:.2f}%"
    return text + f"  ({seconds:.2f} s)"


def _health_line(report: HealthReport) -> str:
    parts = [f"{layer} {norm:.1e}" + ("" if status == "ok" else f" ({status})")
             for layer, (norm, status) in report.layers().items()]
    return "  |grad| by layer: " + ", ".join(parts)


def _health_summary(report: HealthReport, flagged: dict[str, list[int]]) -> None:
    print("gradient health after the last epoch:")
    print(report.table())
    for warning in report.warnings():
        print(f"warning: {warning}")
    for layer, epochs in flagged.items():
        print(f"layer {layer} was flagged in {len(epochs)} of the epochs: {_ranges(epochs)}")


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] as '1-3, 5'."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


def _write_history(path: Path, history: list[Epoch], resumed: bool) -> None:
    """epoch, loss, val_loss, val_accuracy and each param's gradient norm, atomically. A
    resumed run keeps the earlier epochs of the file it continues (if its columns match)."""
    names = [p.name for p in history[0].health.params] if history and history[0].health \
        else []
    header = ["epoch", "loss", "val_loss", "val_accuracy", *[f"grad_norm_{n}" for n in names]]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    if resumed and history and path.is_file():
        with path.open(newline="", encoding="utf-8") as file:
            earlier = list(csv.reader(file))
        if earlier and earlier[0] == header:
            writer.writerows(row for row in earlier[1:]
                             if row and row[0].isdigit() and int(row[0]) < history[0].epoch)
    for r in history:
        norms = [p.grad_norm for p in r.health.params] if r.health else []
        writer.writerow([r.epoch, repr(r.loss), _cell(r.val_loss), _cell(r.val_accuracy),
                         *map(repr, norms)])
    atomic.write_text(path, text.getvalue())


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)
