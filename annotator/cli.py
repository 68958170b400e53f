"""The ``annotator`` command line. Each subcommand is a small function over the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from annotator.device import PRECISIONS


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model flags every command that runs SAM shares."""
    p.add_argument("--model", default=None,
                   help="SAM variant: vit_h, vit_l, vit_b or vit_t (MobileSAM); default: $ANNOTATOR_MODEL, "
                        "else the model a --checkpoint file holds, else vit_h on CUDA, vit_b on MPS, vit_t on CPU")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file to load (default: $ANNOTATOR_CHECKPOINT, the cache, or a download)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="image-encoder precision (default: bf16 on CUDA, fp32 elsewhere)")
    p.add_argument("--no-download", action="store_true", help="never download a checkpoint")


def load_backend(args):
    from annotator.backends import load_segmenter

    return load_segmenter(args.model, args.checkpoint, device=args.device,
                          precision=args.precision, download=not args.no_download)


def cmd_serve(args) -> int:
    from annotator.checkpoints import CheckpointError

    try:
        segmenter, info = load_backend(args)
    except (CheckpointError, ValueError) as e:
        print(f"annotator: {e}", file=sys.stderr)
        return 2
    from annotator.ui import build_app, launch_kwargs

    print(f"annotator: {info.status}", file=sys.stderr)
    app = build_app(segmenter, info)
    app.launch(server_name=args.host, server_port=args.port, **launch_kwargs())
    return 0


def cmd_convert(args) -> int:
    from annotator import coco

    try:
        dataset = coco.load(args.input)
        coco.save(dataset, args.output, args.segmentation, tolerance=args.tolerance)
    except (coco.CocoError, OSError) as e:
        print(f"annotator: {e}", file=sys.stderr)
        return 2
    print(f"annotator: wrote {len(dataset.annotations)} annotations on {len(dataset.images)} images "
          f"({args.segmentation}) to {args.output}", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    import json

    from annotator import coco, metrics

    try:
        gt = coco.load(args.ground_truth)
        pred = coco.load(args.predictions, images=gt.images)
        report = metrics.evaluate(pred, gt)
    except (coco.CocoError, OSError, ValueError) as e:
        print(f"annotator: {e}", file=sys.stderr)
        return 2
    print(report.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="annotator", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the annotation app in the browser")
    add_model_args(serve)
    serve.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    serve.set_defaults(func=cmd_serve)

    convert = sub.add_parser("convert", help="rewrite COCO / SAM amg.py annotations as COCO with RLE or polygons")
    convert.add_argument("input", help="COCO instances JSON, SAM amg.py JSON or amg.py binary_mask folder")
    convert.add_argument("-o", "--output", required=True, help="COCO instances JSON to write")
    convert.add_argument("--segmentation", choices=("rle", "polygon"), default="rle",
                         help="mask format to write (default: rle; polygons keep holes and parts)")
    convert.add_argument("--tolerance", type=float, default=0.0,
                         help="polygon simplification in pixels (default 0: exact outlines)")
    convert.set_defaults(func=cmd_convert)

    ev = sub.add_parser("eval", help="compare predicted masks with ground truth and print metrics")
    ev.add_argument("predictions", help="COCO instances, COCO results list or SAM amg.py output")
    ev.add_argument("ground_truth", help="COCO instances JSON")
    ev.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
