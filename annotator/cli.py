"""The ``annotator`` command line. Each subcommand is a small function over the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from annotator.limits import add_limit_args
from annotator.models.device import PRECISIONS, RUNTIMES

# the formats `annotator convert --to` writes (annotator.formats.convert.FORMATS; listed here so
# building the parser imports no format code)
FORMATS = ("coco-rle", "coco-polygon", "yolo", "labelme", "voc")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model flags every command that runs SAM shares."""
    p.add_argument(
        "--model",
        default=None,
        help="vit_h, vit_l, vit_b, vit_t (MobileSAM), sam2.1-tiny, sam2.1-small, sam2.1-base-plus, "
        "sam2.1-large or sam3; default: $ANNOTATOR_MODEL, else the model a --checkpoint file "
        "holds, else sam2.1-large on CUDA (vit_h without transformers), vit_b on MPS, vit_t on CPU",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file (SAM 1) or Hugging Face folder (SAM 2.1, SAM 3) to load (default: "
        "$ANNOTATOR_CHECKPOINT, the cache, or a download)",
    )
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS + ("int8",),
        default=None,
        help="image-encoder precision (default: bf16 on CUDA, fp32 elsewhere); int8 needs "
        "--runtime onnx or openvino and changes masks slightly (benchmarks/predict.py --int8)",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=None,
        help="what runs the model: torch, onnx (ONNX Runtime) or openvino, the last two on the "
        "CPU from graphs exported once per checkpoint into the cache (default: "
        "$ANNOTATOR_RUNTIME, else onnx on a CPU when installed, torch elsewhere)",
    )
    p.add_argument("--no-download", action="store_true", help="never download a checkpoint")


def load_backend(args):
    from annotator.models.loading import load_segmenter

    return load_segmenter(
        args.model,
        args.checkpoint,
        device=args.device,
        precision=args.precision,
        download=not args.no_download,
        runtime=args.runtime,
    )


def cmd_serve(args) -> int:
    # A click runs small parallel regions; with OpenMP's default active waiting, torch's
    # threads spin against whatever else is busy and a vit_b click on a shared 2-core CPU
    # took ~800 ms instead of ~100 ms (benchmarks/ui_latency.py). The policy is read when
    # torch loads, so it is set before the first torch import; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from annotator.limits import Limits, LimitsError
    from annotator.models.checkpoints import CheckpointError

    try:
        limits = Limits.from_args(args)
        segmenter, info = load_backend(args)
    except (CheckpointError, LimitsError, ValueError) as e:
        print(f"annotator: {e}", file=sys.stderr)
        return 2
    from annotator.app.ui import build_app, launch_kwargs
    from annotator.app.workbench import Workbench
    from annotator.projects.folders import FolderPolicy
    from annotator.projects.library import ProjectLibrary

    print(f"annotator: {info.status}", file=sys.stderr)
    projects = ProjectLibrary(args.projects_dir)
    folders = FolderPolicy.from_env(args.allow_folder)
    print(
        f"annotator: projects in {projects.root}; server folders allowed: "
        f"{', '.join(map(str, folders.allowed)) or 'none'}",
        file=sys.stderr,
    )
    workbench = Workbench(segmenter, info, limits=limits, projects=projects, folders=folders)
    app = build_app(segmenter, info, workbench=workbench, limits=limits)
    app.launch(server_name=args.host, server_port=args.port, **launch_kwargs(limits, info, private=[projects.root]))
    return 0


def add_generator_args(p: argparse.ArgumentParser) -> None:
    """SAM's automatic-generator parameters, under SAM's names (``--points-per-side`` ...)."""
    from annotator.amg.params import GENERATOR_PARAMS

    group = p.add_argument_group("segment-everything parameters (SAM's names and defaults)")
    for name, (default, what) in GENERATOR_PARAMS.items():
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=type(default),
            default=None,
            metavar=type(default).__name__.upper(),
            help=f"{what} (default: {default:g})",
        )


def cmd_auto(args) -> int:
    from annotator.amg.batch import find_images, needs_prelabel, recorded_settings, sidecar_path
    from annotator.amg.params import GENERATOR_PARAMS
    from annotator.formats.images import ImageError
    from annotator.projects.store import Project, ProjectError

    if not args.output and not args.project:
        print("annotator: say where the masks go: -o OUT.json and/or --project FILE", file=sys.stderr)
        return 2
    params = {k: getattr(args, k) for k in GENERATOR_PARAMS if getattr(args, k) is not None}
    project_path = args.project or sidecar_path(args.output)
    try:
        paths = find_images(args.inputs, recursive=args.recursive)
        project = Project(project_path)
    except (ImageError, ProjectError) as e:
        print(f"annotator: {e}", file=sys.stderr)
        return 2
    with project:
        unreadable: dict = {}
        infos = project.add_images(paths, errors=unreadable)
        for path, why in unreadable.items():
            print(f"annotator: skipping {path}: {why}", file=sys.stderr)
        ids = list(dict.fromkeys(i.id for i in infos))
        for text in args.text:  # COCO categories in the order the texts were given
            if text.split():
                project.add_category(" ".join(text.split()))
        todo = [i for i in infos if needs_prelabel(i)]
        print(
            f"annotator: {len(ids)} images, {len(ids) - len(todo)} already done, "
            f"{len(todo)} to segment; progress is kept in {project_path}",
            file=sys.stderr,
        )
        result = None
        if todo:
            if args.text:
                run, settings = _concept_runner(args)
            elif args.ray:
                run, settings = _ray_runner(args, params)
            else:
                run, settings = _local_runner(args, params)
            if run is None:
                return 2
            others = {
                i.name for i in infos if i.prelabel and {k: v for k, v in i.prelabel.items() if k != "at"} != settings
            }
            if others:
                print(
                    f"annotator: note: {len(others)} images were pre-labelled earlier with other "
                    f"settings and are kept as they are",
                    file=sys.stderr,
                )
            try:
                result = run(project, [i.id for i in todo], settings)
            except KeyboardInterrupt:
                done = sum(not needs_prelabel(project.image(i)) for i in ids)
                print(
                    f"\nannotator: interrupted; {done} of {len(ids)} images are saved in "
                    f"{project_path}; run the same command again to go on",
                    file=sys.stderr,
                )
                return 130
            for image_id, why in result.failed.items():
                print(f"annotator: failed on {project.image(image_id).name}: {why}", file=sys.stderr)
        if args.output:
            settings = recorded_settings(project.image(i) for i in ids) or {}
            project.export_coco(
                args.output, image_ids=ids, model=settings.pop("model", None), parameters=settings or None
            )
            n = sum(project.image(i).n_annotations for i in ids)
            print(f"annotator: wrote {n} masks on {len(ids)} images to {args.output}", file=sys.stderr)
    return 1 if unreadable or (result and result.failed) else 0


def _local_runner(args, params: dict):
    """(run(project, image_ids, settings), the settings to record), or (None, None) after
    saying why SAM cannot run."""
    from annotator.amg.batch import prelabel
    from annotator.models.checkpoints import CheckpointError

    try:
        segmenter, info = load_backend(args)
    except (CheckpointError, ValueError) as e:
        print(f"annotator: {e}", file=sys.stderr)
        return None, None
    if info.backend != "sam":
        print(f"annotator: segment everything needs SAM weights: {info.reason}", file=sys.stderr)
        return None, None
    from annotator.amg.generator import MaskGenerator

    print(f"annotator: {info.status}", file=sys.stderr)
    generator = MaskGenerator(segmenter, output_mode="coco_rle", **params)
    return (lambda project, ids, settings: prelabel(project, generator, ids, settings)), {"model": info.model, **params}


def _concept_runner(args):
    """(run, settings) for ``--text``: SAM 3 finds every instance of each text in each image;
    each text is encoded once for the whole run (with ``--ray``, once per actor). (None, None)
    after saying why it cannot run."""
    from annotator.amg.batch import find_all_into
    from annotator.models.checkpoints import CheckpointError
    from annotator.models.hub import get_hub_model, resolve_hub_checkpoint

    if args.model not in (None, "sam3"):
        print(f"annotator: --text needs SAM 3 (--model sam3), not {args.model}", file=sys.stderr)
        return None, None
    hub = get_hub_model("sam3")
    try:
        from annotator.models.device import pick_device
        from annotator.models.loading import load_concept_finder

        resolved = resolve_hub_checkpoint(hub, args.checkpoint, download=not args.no_download)
        finder = None if args.ray else load_concept_finder(resolved.path, device=pick_device(args.device))
    except (CheckpointError, ValueError) as e:
        print(f"annotator: {e}", file=sys.stderr)
        return None, None
    tag = f"sam3 ({hub.repo_id}@{resolved.revision[:12] if resolved.revision else 'local folder'})"
    texts = [" ".join(t.split()) for t in args.text]
    print(
        f"annotator: SAM 3 from the {resolved.source} ({resolved.path}); finding {', '.join(texts)} "
        f"with score >= {args.threshold:g}",
        file=sys.stderr,
    )
    settings = {"model": tag, "texts": texts, "threshold": args.threshold}
    if args.ray:  # the actors load the folder resolved here (a shared file system, as for --checkpoint)
        run, _ = _ray_runner(args, {}, checkpoint=str(resolved.path))
        return (run, settings) if run is not None else (None, None)
    return (
        lambda project, ids, settings: find_all_into(project, finder, ids, texts, settings, threshold=args.threshold)
    ), settings


def _ray_runner(args, params: dict, checkpoint: str | None = None):
    from annotator.amg import distributed

    # the cluster is asked first, so a request it cannot hold fails now, naming its flag
    try:
        ray = distributed.connect()
        cluster = ray.cluster_resources()
        num_gpus = distributed.gpus_per_actor(cluster, args.ray, args.gpus_per_actor)
    except (ImportError, ValueError) as e:
        print(f"annotator: {e}", file=sys.stderr)
        return None, None
    print(
        f"annotator: Ray cluster with {cluster.get('CPU', 0):g} CPUs and {cluster.get('GPU', 0):g} GPUs: "
        f"{args.ray} actors with {num_gpus:g} GPUs each",
        file=sys.stderr,
    )

    def run(project, ids, settings):
        return distributed.run(
            project,
            ids,
            settings,
            concurrency=args.ray,
            num_gpus=num_gpus,
            batch_size=args.batch_size,
            model=args.model,
            checkpoint=checkpoint or args.checkpoint,
            device=args.device,
            precision=args.precision,
            generator_params=params,
        )

    return run, {"model": args.model, **params}


def cmd_convert(args) -> int:
    from annotator.formats import convert
    from annotator.formats.coco import CocoError

    older = {"rle": "coco-rle", "polygon": "coco-polygon", None: None}[args.segmentation]
    if args.to and older and args.to != older:
        print(f"annotator: --to {args.to} and --segmentation {args.segmentation} disagree; give one", file=sys.stderr)
        return 2
    fmt = args.to or older or "coco-rle"
    try:
        imported, report = convert.convert(
            args.input, args.output, fmt, tolerance=args.polygon_tolerance, copy_images=not args.no_images
        )
    except (CocoError, convert.ExportCheckError, OSError, ValueError) as e:
        print(f"annotator: {e}", file=sys.stderr)
        return 2
    print(
        f"annotator: read {imported.format} from {args.input}; wrote {len(report.masks)} annotations "
        f"on {report.n_images} images ({fmt}) to {args.output}",
        file=sys.stderr,
    )
    print(f"annotator: {report.line()}", file=sys.stderr)
    for image_id, ann_id, iou in report.worst(5):
        print(f"annotator:   image {image_id} mask {ann_id}: IoU {iou:.4f}", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    import json

    from annotator.formats import coco, metrics

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
    for add in (_add_serve, _add_auto, _add_convert, _add_eval):
        add(sub)
    return parser


def _add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="start the annotation app in the browser")
    add_model_args(serve)
    serve.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    add_limit_args(serve)
    serve.add_argument(
        "--projects-dir",
        default=None,
        metavar="DIR",
        help="where project files live (default: $ANNOTATOR_PROJECTS_DIR, else ~/.local/share/annotator/projects)",
    )
    serve.add_argument(
        "--allow-folder",
        action="append",
        default=[],
        metavar="DIR",
        help="let users add the images of server folders below DIR to a project "
        "(repeatable; also $ANNOTATOR_ALLOW_FOLDERS; none by default)",
    )
    serve.set_defaults(func=cmd_serve)


def _add_auto(sub) -> None:
    auto = sub.add_parser("auto", help="pre-label images with segment everything (resumable)")
    auto.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIR", help="image files and/or folders")
    auto.add_argument(
        "-o", "--output", default=None, help="COCO file to write (progress is kept beside it in OUT.annotator)"
    )
    auto.add_argument("--project", default=None, help="project file to pre-label into")
    auto.add_argument("-r", "--recursive", action="store_true", help="search folders recursively")
    add_model_args(auto)
    concepts = auto.add_argument_group("find all (SAM 3): instead of segment everything")
    concepts.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="WORDS",
        help="find every instance of this noun phrase (repeatable; each text becomes a "
        "COCO category); needs the SAM 3 checkpoint",
    )
    concepts.add_argument(
        "--threshold", type=float, default=0.5, help="keep instances scoring at least this (default: 0.5)"
    )
    add_generator_args(auto)
    dist = auto.add_argument_group("distributed (needs annotator[ray]; see docs/distributed.md)")
    dist.add_argument(
        "--ray",
        type=int,
        default=0,
        metavar="ACTORS",
        help="run on this many Ray Data actors instead of in this process",
    )
    dist.add_argument(
        "--gpus-per-actor",
        type=float,
        default=None,
        help="GPUs each actor holds (default: 1 when the cluster has a GPU per actor, "
        "shared evenly when it has fewer, 0 when it has none)",
    )
    dist.add_argument("--batch-size", type=int, default=4, help="images per actor call (default: 4)")
    auto.set_defaults(func=cmd_auto)


def _add_convert(sub) -> None:
    convert = sub.add_parser(
        "convert",
        help="convert annotations between COCO, YOLO-seg, labelme and VOC; every export is read back and checked",
    )
    convert.add_argument(
        "input",
        help="COCO instances JSON, SAM amg.py JSON or binary_mask folder, labelme "
        "JSON file or folder, YOLO-seg folder (or its data.yaml), VOC folder",
    )
    convert.add_argument(
        "-o",
        "--output",
        required=True,
        help="COCO: the JSON file; yolo, labelme, voc: a new (or empty) folder, or a .zip",
    )
    convert.add_argument("--to", choices=FORMATS, default=None, help="format to write (default: coco-rle)")
    convert.add_argument(
        "--segmentation",
        choices=("rle", "polygon"),
        default=None,
        help="older spelling of --to coco-rle / --to coco-polygon",
    )
    convert.add_argument(
        "--polygon-tolerance",
        "--tolerance",
        dest="polygon_tolerance",
        type=float,
        default=0.0,
        metavar="PX",
        help="simplify polygon outlines by up to PX pixels (default 0: exact outlines); "
        "the report gives the IoU this costs",
    )
    convert.add_argument(
        "--no-images", action="store_true", help="do not copy the images found beside the input into folder formats"
    )
    convert.set_defaults(func=cmd_convert)


def _add_eval(sub) -> None:
    ev = sub.add_parser("eval", help="compare predicted masks with ground truth and print metrics")
    ev.add_argument("predictions", help="COCO instances, COCO results list or SAM amg.py output")
    ev.add_argument("ground_truth", help="COCO instances JSON")
    ev.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    ev.set_defaults(func=cmd_eval)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
