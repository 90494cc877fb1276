"""``maskwatch watch SOURCE``: masks in a video file, a webcam or a network stream, as they happen."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO, cast

from maskwatch.cli.common import add_model_options, non_negative_float, non_negative_int, positive_float, positive_int
from maskwatch.video.analyzer import CLASSIFY_EVERY

# Exit codes: 0 the source ended, 1 a live source was lost for good or failed while reading (a file cut short:
# fewer frames than it declares, a stream read as a file that stalled), an output (--json, --events, --out)
# failed while writing (disk full, broken pipe), or --webhook or --mqtt could not deliver every event, 2 nothing
# could start (bad source, option, model or output), 130 stopped by Ctrl-C or SIGTERM.
EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger("maskwatch.video")


def add_command(sub: argparse._SubParsersAction) -> None:

    watch = sub.add_parser(
        "watch", help="detect faces and masks in a video, webcam or stream",
        description="Track faces in a video file, a webcam (its index, e.g. 0) or an RTSP/HTTP stream; "
                    "print one JSON line per frame, count people and raise alerts.",
    )
    watch.add_argument("source", help="video file, webcam index, or rtsp:// http(s):// ... URL")
    out = watch.add_argument_group("outputs")
    out.add_argument("--out", metavar="FILE", help="write the annotated video here (.mp4, .avi, .mkv)")
    per_frame = out.add_mutually_exclusive_group()
    per_frame.add_argument("--json", metavar="FILE", help="write the per-frame JSON lines here instead of stdout")
    per_frame.add_argument("--no-json", action="store_true", help="write no per-frame JSON lines")
    out.add_argument("--show", action="store_true", help="show the annotated video in a window (q quits)")
    out.add_argument("--blur-faces", action="store_true", help="blur the faces in --out and --show")
    out.add_argument("--events", metavar="FILE", help="append events (alerts, outages, summary) as JSON lines")
    out.add_argument("--webhook", metavar="URL", help="also POST each event as JSON to this http(s) URL")
    out.add_argument("--stats-every", type=non_negative_float, default=0.0, metavar="SECONDS",
                     help="also send a 'stats' event with the counters every SECONDS of stream time to "
                          "--events, --webhook and --mqtt (default 0: none; the counters still come in stream_end)")
    out.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    track = watch.add_argument_group("tracking")
    track.add_argument("--classify-every", type=positive_int, default=CLASSIFY_EVERY, metavar="N",
                       help="classify each tracked face every Nth detection round (new and uncertain faces at "
                            "once): every Nth frame, or every (N x --detect-every)th; tracking still runs on every "
                            f"frame (default {CLASSIFY_EVERY})")
    track.add_argument("--detect-every", type=positive_int, default=1, metavar="N",
                       help="run the models on every Nth frame and track faces in between (default 1)")
    track.add_argument("--detect-size", type=positive_int, metavar="PX",
                       help="scale frames to this long side for face detection: smaller is faster but misses "
                            "small faces (default: enlarge to 640, shrink to 1280)")
    track.add_argument("--alert-after", type=non_negative_float, default=10.0, metavar="SECONDS",
                       help="alert when a person stays without a mask this long (default 10)")
    track.add_argument("--window", type=positive_float, default=60.0, metavar="SECONDS",
                       help="compliance rate over the people seen in this many seconds (default 60)")
    src = watch.add_argument_group("source")
    src.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                     help="treat the source as live (drop stale frames, reconnect) or as a file; "
                          "default: URLs and webcams are live, files are not")
    src.add_argument("--loop", action="store_true", help="replay a file from the start when it ends")
    src.add_argument("--timeout", type=positive_float, default=10.0, metavar="SECONDS",
                     help="network open and read timeout (default 10)")
    src.add_argument("--reconnect-delay", type=positive_float, default=1.0, metavar="SECONDS",
                     help="first wait before reconnecting a lost stream; doubles up to 30 s, and a stream that "
                          "drops again within 30 s of coming back keeps its wait (default 1)")
    src.add_argument("--reconnect-attempts", type=non_negative_int, default=0, metavar="N",
                     help="give up on a lost stream after N failed attempts in a row (default 0: never)")
    add_mqtt_options(watch)
    add_model_options(watch)
    watch.set_defaults(func=cmd_watch)










def build_video_detector(args: argparse.Namespace) -> Any:  # -> MaskDetector
    from maskwatch.cli.common import build_detector
    from maskwatch.options import Options

    return build_detector(args, Options.video(detect_size=args.detect_size))


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM ask the loop to finish cleanly; a second Ctrl-C interrupts at once."""

    def request_stop(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("stopping (%s); finishing the outputs", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_watch(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="maskwatch: %(message)s", stream=sys.stderr)
    from maskwatch.model_files import model_load_errors
    from maskwatch.video.source import SourceError
    from maskwatch.video.webhook import WebhookError
    from maskwatch.video.writers import OutputError

    stop = threading.Event()
    try:
        with stop_on_signals(stop), contextlib.ExitStack() as stack:
            try:
                source, watcher = _start(args, stack)
            except (SourceError, OutputError, WebhookError, *model_load_errors()) as exc:  # type: ignore[misc]
                print(f"maskwatch: {exc}", file=sys.stderr)
                return EXIT_UNUSABLE
            log.info("watching %s (%dx%d, %s)", source.spec.name, *source.size,
                     f"{source.fps:g} fps" if source.fps else "no frame rate given")
            summary = watcher.run(source, stop)
    except KeyboardInterrupt:  # a second Ctrl-C: the outputs were still closed on the way out
        return EXIT_INTERRUPTED
    except (OutputError, OSError) as exc:  # closing an output failed (a full disk shows at the last flush)
        print(f"maskwatch: cannot write output: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if summary.output_error:
        for problem in (summary.source_error, summary.output_error):  # the source's is logged only at INFO
            if problem:
                print(f"maskwatch: {problem}", file=sys.stderr)
        return EXIT_FAILED
    webhook = watcher.outputs.webhook
    if webhook is not None:  # closed by now: these counts are final
        log.info("webhook: %d event(s) delivered, %d failed, %d dropped from a full queue", webhook.delivered,
                 webhook.failed, webhook.dropped)
    mqtt = watcher.outputs.mqtt
    if mqtt is not None:  # closed by now: these counts are final
        log.info("mqtt: %d event(s) acknowledged by the broker, %d failed, %d dropped from a full queue",
                 mqtt.delivered, mqtt.failed, mqtt.dropped)
    end = summary.end_event
    log.info("%d frames in %.1f s (%.1f fps), %d dropped, %d corrupt; people %d: %d with mask, %d without, "
             "%d mask under the nose; %d alert(s)", summary.frames, summary.seconds, summary.fps, end["dropped"],
             end["corrupt"], end["people_seen"], end["with_mask"], end["without_mask"],
             end.get("incorrect_mask", 0), end["alerts"])
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.source_error or summary.source_lost:
        print(f"maskwatch: {summary.source_error or 'the source was lost'}", file=sys.stderr)
        return EXIT_FAILED
    incomplete = [sink for sink in (webhook, mqtt) if sink is not None and not sink.complete]
    for sink in incomplete:  # a door controller that missed an alert must hear of it
        print(f"maskwatch: {sink.name}: {sink.delivered} of {sink.sent} event(s) delivered ({sink.failed} "
              f"failed, {sink.dropped} dropped)", file=sys.stderr)
    return EXIT_FAILED if incomplete else EXIT_OK


def _start(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[Any, Any]:
    """Check the options, load the models, open the source and every output; ``stack`` closes them.

    Cheap checks come first, so a typo fails before the models load.
    """
    from maskwatch.video.analyzer import VideoAnalyzer
    from maskwatch.video.events import EventLog
    from maskwatch.video.runner import StreamWatcher, WatchOutputs
    from maskwatch.video.source import VideoSource, parse_source
    from maskwatch.video.webhook import WebhookSink, validate_webhook_url
    from maskwatch.video.writers import VideoFileWriter, WindowDisplay, check_display

    spec = parse_source(args.source, args.live)
    check_files_apart(spec, {"--out": args.out, "--json": args.json, "--events": args.events})
    if args.show:
        check_display()
    if args.webhook:
        validate_webhook_url(args.webhook)
    mqtt_settings = _mqtt_settings(args) if args.mqtt else {}  # a bad URL or file fails before the models load
    if args.out:
        VideoFileWriter(args.out, fps=1.0)  # validates the file type and folder; opens nothing yet
    analyzer = VideoAnalyzer(build_video_detector(args), detect_every=args.detect_every,
                             classify_every=args.classify_every)
    source = VideoSource(spec, loop=args.loop, timeout=args.timeout, reconnect_delay=args.reconnect_delay,
                         reconnect_attempts=args.reconnect_attempts, max_pixels=args.max_pixels)
    source.open()
    stack.callback(source.close)
    outputs = WatchOutputs(blur_faces=args.blur_faces)
    if args.webhook:
        outputs.webhook = WebhookSink(args.webhook, timeout=min(args.timeout, 5.0))
        stack.callback(outputs.webhook.close)
    if args.mqtt:
        from maskwatch.video.mqtt import MqttSink

        outputs.mqtt = MqttSink(args.mqtt, **mqtt_settings)
        stack.callback(outputs.mqtt.close)
    if not args.no_json:
        outputs.json = _open_text(stack, args.json, "w") if args.json else sys.stdout
    if args.events:
        outputs.events = EventLog(_open_text(stack, args.events, "a"))
    if args.out:
        if not source.fps:
            log.info("%s gives no frame rate; writing the video at 25 fps", spec.name)
        outputs.video = VideoFileWriter(args.out, fps=source.fps or 25.0)
        stack.callback(outputs.video.close)
        outputs.video.open(source.size)  # an unwritable folder or a missing codec fails here, not mid-run
    if args.show:
        outputs.display = WindowDisplay(f"maskwatch: {spec.name}")
        stack.callback(outputs.display.close)
    watcher = StreamWatcher(analyzer, outputs, alert_after=args.alert_after, window=args.window,
                            source_name=spec.name, stats_every=args.stats_every)
    return source, watcher


def check_files_apart(spec: Any, outputs: dict[str, str | None]) -> None:  # (SourceSpec, option -> path)
    """Refuse (OutputError, exit 2) an output file that is the video file being read (writing it would destroy
    the input), and two outputs named to one file (each would write over the other's lines).

    A file that exists is known by its inode (hard links too), one to be made by its real path; a device
    (/dev/stdout, /dev/null) may be shared.
    """
    import stat

    from maskwatch.video.writers import OutputError

    def key(path: str) -> object | None:
        try:
            info = os.stat(path)
        except OSError:
            return os.path.realpath(path)
        return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None

    source = key(spec.target) if isinstance(spec.target, str) and not spec.network else None
    seen: dict[object, str] = {}
    for option, path in outputs.items():
        if not path or (named := key(path)) is None:
            continue
        if named == source:
            raise OutputError(f"{option} {path} is the video being read; writing it would destroy it")
        if named in seen:
            raise OutputError(f"{seen[named]} and {option} name the same file {path}: give each its own")
        seen[named] = option


def _open_text(stack: contextlib.ExitStack, path: str, mode: str) -> TextIO:
    """Open a UTF-8 text file that ``stack`` closes; an OSError becomes an OutputError (exit 2)."""
    from maskwatch.video.writers import OutputError

    try:
        return cast(TextIO, stack.enter_context(Path(path).open(mode, encoding="utf-8")))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def add_mqtt_options(watch: argparse.ArgumentParser) -> None:
    """--mqtt and its connection options (the ``mqtt`` extra: paho-mqtt)."""
    mqtt = watch.add_argument_group("MQTT (pip install 'maskwatch[mqtt]')")
    mqtt.add_argument("--mqtt", metavar="URL",
                      help="also publish each event (QoS 1) to mqtt://HOST[:PORT]/TOPIC or mqtts://...: "
                           "to TOPIC/<event type>")
    mqtt.add_argument("--mqtt-username", metavar="NAME", help="user name for the broker")
    mqtt.add_argument("--mqtt-password", metavar="PASSWORD",
                      help="password for the broker (default: $MASKWATCH_MQTT_PASSWORD, which keeps it out of ps)")
    mqtt.add_argument("--mqtt-tls", action="store_true", help="TLS to the broker (implied by mqtts:// and --mqtt-ca)")
    mqtt.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate(s) the broker's certificate must chain to "
                                                        "(default: the system's)")
    mqtt.add_argument("--mqtt-cert", metavar="FILE", help="client certificate, for brokers that require one")
    mqtt.add_argument("--mqtt-key", metavar="FILE", help="the client certificate's private key")
    mqtt.add_argument("--mqtt-queue", type=positive_int, default=100, metavar="N",
                      help="events kept while the broker is slow or away; the oldest go first (default 100)")


def _mqtt_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The MqttSink keyword arguments from the command line; ValueError (exit 2) for anything unusable."""
    import os

    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        raise ValueError("--mqtt needs paho-mqtt: pip install 'maskwatch[mqtt]'") from None
    from maskwatch.video.mqtt import parse_mqtt_url

    parse_mqtt_url(args.mqtt)
    for option, path in (("--mqtt-ca", args.mqtt_ca), ("--mqtt-cert", args.mqtt_cert), ("--mqtt-key", args.mqtt_key)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{option}: no such file: {path}")
    password = args.mqtt_password if args.mqtt_password is not None else os.environ.get("MASKWATCH_MQTT_PASSWORD")
    if password is not None and args.mqtt_username is None:
        raise ValueError("an MQTT password needs --mqtt-username")
    return {"username": args.mqtt_username, "password": password, "tls": True if args.mqtt_tls else None,
            "ca_file": args.mqtt_ca, "cert_file": args.mqtt_cert, "key_file": args.mqtt_key,
            "max_queue": args.mqtt_queue}
