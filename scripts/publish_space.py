#!/usr/bin/env python
"""Publish space/ to a Hugging Face Space, with its hardware and sleep time, in one command.

    python scripts/publish_space.py owner/name [--hardware t4-small] [--sleep-time 3600] [--dry-run] [--list-files]
    make publish SPACE=owner/name ARGS="--dry-run"

Thin: parse the options, build a PublishConfig, call vlm_lab.publish.publish, print
the report. Re-running gives the same end state: unchanged files are not re-sent, no
change makes no commit, settings are compared with the Space's and set only when they
differ. The token comes from HF_TOKEN (or `hf auth login`) and never appears in output.

Exit codes: 0 done; 2 bad option or preflight failure; 3 token or billing; 4 not found
or conflict; 5 network; 6 the Space failed to build or run; 7 timed out waiting.
"""

from __future__ import annotations

import argparse
import sys
import traceback


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="publish_space.py",
        description="Publish space/ (with the vlm_lab package and the embedded checkpoints) to a Hugging Face Space.",
        epilog="Exit codes: 2 options/preflight, 3 token/billing, 4 not found/conflict, 5 network, 6 build/run error, 7 timeout.",
    )
    p.add_argument("space", help="the Space, owner/name")
    p.add_argument("--space-dir", default="space", help="the app folder to publish (default: space)")
    p.add_argument("--hardware", default="t4-small", help="Space hardware (default t4-small; cpu-basic stops paying)")
    p.add_argument("--sleep-time", type=sleep_time, default=None, metavar="TIME",
                   help="idle time before the Space sleeps: seconds (3600), or 30m, 1h, 2d; never (or -1) to keep it "
                        "up (default 1h on paid hardware)")
    p.add_argument("--public", action="store_true", help="create the Space (and a checkpoints repo) public; default private")
    p.add_argument("--secret", action="append", default=[], metavar="NAME",
                   help="send environment variable NAME as a Space secret (repeatable; the value is read from the environment)")
    p.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                   help="set a Space variable (repeatable): the app's VLM_LAB_* settings (listed in space/README.md, "
                        "Settings) are checked before anything is uploaded; variables are public, so one that looks "
                        "like a credential is refused: pass those with --secret")
    p.add_argument("--checkpoints", default="checkpoints/shapes", help="training output whose checkpoint-N folders are published")
    p.add_argument("--no-checkpoints", action="store_true", help="publish the app without checkpoints: it serves what the Space variable "
                        "VLM_LAB_CHECKPOINTS names (kept as it is; set it with --var or on the Hub)")
    p.add_argument("--checkpoints-repo", default="", metavar="OWNER/NAME",
                   help="upload the checkpoints to this model repo and point VLM_LAB_CHECKPOINTS at it")
    p.add_argument("--dry-run", action="store_true", help="print the plan (files, settings, cost) and write nothing to the hub "
                   "(a missing default checkpoints/shapes is still built, locally, so that the plan lists it)")
    p.add_argument("--list-files", action="store_true", help="list every file of the plan, every file left out (and why) "
                   "and every checkpoint, not the first 12 of each")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the Space to build")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the build (default 1800)")
    p.add_argument("--poll-interval", type=float, default=5.0, help="seconds between runtime checks while waiting")
    p.add_argument("--active-hours", type=float, default=8.0,
                   help="hours a day the Space is in use, for the monthly cost estimate (default 8)")
    p.add_argument("--message", default="Publish vlm_lab Space", help="commit message")
    p.add_argument("--endpoint", default="", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--retries", type=int, default=3, help="attempts for a step that fails on the network")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--pause", action="store_true", help="pause the Space (no billing until --restart)")
    action.add_argument("--restart", action="store_true", help="restart the Space (and wait for it unless --no-wait)")
    return p


_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def sleep_time(text: str) -> int:
    """``--sleep-time``: seconds, a number with a unit (``30m``, ``1.5h``, ``2d``), or ``never``/``-1``; as the
    report says it ("1 h"), so it may be written back as read."""
    value = text.strip().lower().replace(" ", "")
    if value in ("never", "-1"):
        return -1
    number = value.rstrip("".join(_UNITS))
    unit = value[len(number):] or "s"
    try:
        seconds = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a sleep time; use seconds (3600), 30m, 1h, 2d or never") from None
    if not seconds.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is {seconds:g} seconds; the Hub takes whole seconds")
    return int(seconds)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vlm_lab.cpu_kernels import pin_cpu_kernels

    pin_cpu_kernels()  # before torch runs: a build of the embedded checkpoints trains the README's weights
    from vlm_lab.cli import flags_in_config_errors
    from vlm_lab.config import PublishConfig
    from vlm_lab.errors import VlmLabError
    from vlm_lab.publish import publish
    from vlm_lab.publish_hub import scrub

    def log(message: str) -> None:
        print(f"[publish] {message}", file=sys.stderr, flush=True)

    try:
        # The library names PublishConfig's fields (checkpoints='DIR', embed_checkpoints=False), as a notebook passes
        # them; this command's user typed flags. Only the fields its errors name: a Hub's detail may hold other words.
        with flags_in_config_errors("space_dir", "hardware", "sleep_time", "checkpoints", "checkpoints_repo", "timeout",
                                    embed_checkpoints="--no-checkpoints", wait="--no-wait"):
            config = PublishConfig(
                space=args.space, space_dir=args.space_dir, hardware=args.hardware, sleep_time=args.sleep_time,
                public=args.public, secrets=tuple(args.secret), variables=tuple(args.var), checkpoints=args.checkpoints,
                embed_checkpoints=not args.no_checkpoints, checkpoints_repo=args.checkpoints_repo,
                action="pause" if args.pause else "restart" if args.restart else "publish", dry_run=args.dry_run,
                wait=not args.no_wait, timeout=args.timeout, poll_interval=args.poll_interval,
                active_hours_per_day=args.active_hours, commit_message=args.message, endpoint=args.endpoint,
                retries=args.retries,
            )
            report = publish(config, progress=log)
    except VlmLabError as e:
        print(f"error: {type(e).__name__}: {scrub(str(e), _known_secrets(args))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again: it only sends what is still missing", file=sys.stderr)
        return 130
    except Exception:  # a bug or an unforeseen Hub answer: show it, but never the token
        print(scrub(traceback.format_exc(), _known_secrets(args)), file=sys.stderr)
        return 1
    print(report.format(list_files=args.list_files))
    return 0


def _known_secrets(args: argparse.Namespace) -> list[str]:
    """What to scrub from anything printed: every credential at hand (the library's one list of them)."""
    from huggingface_hub import get_token

    from vlm_lab.publish_stage import credentials_at_hand

    try:
        token = get_token()
    except Exception:
        token = None
    return list(credentials_at_hand(token, args.secret, args.var).values())


if __name__ == "__main__":
    sys.exit(main())
