"""DockerFile: a folder with a Dockerfile and a small web service that answers like Azure's exported container.

The folder `app/` holds `Dockerfile`, `app.py` (container_app.py: onnxruntime + Pillow + numpy, no cvbot), the
classifier as `model.onnx` (RGB, 0..255, with Windows ML's pixel metadata), `labels.txt`, `requirements.txt`
(the versions this export was made with, so the container resizes images with the same Pillow) and `README.md`.
The model's second output `unknown_score` is cvbot's unknown score; app.py answers it as `unknownScore`, with
`unknown` from the threshold of the manifest (stored in the model's metadata as `unknownThreshold`).
Flavors: `Linux` (x86-64) and `ARM` (64-bit ARM, e.g. a Raspberry Pi 4/5 with a 64-bit OS, Jetson, Graviton).
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

from .base import Convention, Exporter, ExportRequest

FOLDER = "app"
BASE_IMAGES = {"Linux": "python:3.11-slim", "ARM": "arm64v8/python:3.11-slim"}
PACKAGES = {"onnxruntime": "onnxruntime>=1.18,<2", "pillow": "pillow>=10.3,<14", "numpy": "numpy>=1.26,<3"}


def requirements() -> str:
    """The runtime's packages pinned to the versions installed here (Pillow's resampling decides the pixels)."""
    lines = []
    for name, fallback in PACKAGES.items():
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(fallback)
    return "\n".join(lines) + "\n"


def dockerfile(flavor: str) -> str:
    return (f"# cvbot exported model, {flavor} flavor; build: docker build -t cvbot-model .\n"
            f"FROM {BASE_IMAGES[flavor]}\n"
            "WORKDIR /app\n"
            "COPY requirements.txt .\n"
            "RUN pip install --no-cache-dir -r requirements.txt\n"
            "COPY app.py model.onnx labels.txt ./\n"
            "ENV PORT=80 PYTHONUNBUFFERED=1\n"
            "EXPOSE 80\n"
            'CMD ["python", "app.py"]\n')


def readme(flavor: str, size: int) -> str:
    platform = "--platform linux/arm64 " if flavor == "ARM" else ""
    return f"""# cvbot exported model ({flavor})

Build and run the container (it listens on port 80 inside; `-e PORT=...` changes that):

    docker build {platform}-t cvbot-model .
    docker run -p 8080:80 cvbot-model

or run it without Docker (Python 3.11+): `pip install -r requirements.txt && PORT=8080 python app.py`.

Ask it as you asked Azure Custom Vision's exported container:

    curl -X POST http://127.0.0.1:8080/image -H "Content-Type: application/octet-stream" --data-binary @photo.jpg
    curl -X POST http://127.0.0.1:8080/image -F imageData=@photo.jpg
    curl -X POST http://127.0.0.1:8080/url -H "Content-Type: application/json" -d '{{"url": "https://..."}}'

The answer is Custom Vision's prediction JSON (`created`, `id`, `iteration`, `predictions` with `tagName`,
`tagId`, `probability`, `boundingBox`: null, `project`), every tag, highest probability first, with cvbot's
own fields beside them, as cvbot's API answers: `unknownScore` (0 to 1: how unlike the images the model was
trained on this one is), `unknownThreshold` (from the export; `-e UNKNOWN_THRESHOLD=0.9` changes it) and
`unknown` (true when the score is at or above the threshold: the image looks like nothing the model knows;
its tags are then best not trusted). Clients written for Azure ignore these fields. Images are
prepared as cvbot's server prepares them (transparent pixels on white, shorter side to {size} px bicubic,
centre crop), so the probabilities are the server's. Images take at most 4 MB; `/url` downloads http(s)
addresses only, at most 4 MB within 10 s. Expose the port only to clients you trust: `/url` fetches any
address it is given, as Azure's container does.
"""


class DockerFileExporter(Exporter):
    platform = "DockerFile"
    flavors = ("Linux", "ARM")
    convention = Convention("RGB", 255.0, "NCHW")
    usage = ("Unzip, then `docker build -t cvbot-model app && docker run -p 8080:80 cvbot-model` (or without "
             "Docker: `cd app && pip install -r requirements.txt && PORT=8080 python app.py`). POST an image to "
             "/image (bytes or multipart imageData) or {\"url\": ...} to /url: the answer is Custom Vision's "
             "prediction JSON, plus cvbot's unknownScore, unknownThreshold and unknown (true when the image looks "
             "like nothing the model was trained on). app/README.md has the details.")

    def carries_unknown(self, flavor: str | None) -> bool:
        return True

    def files(self, request: ExportRequest) -> dict[str, bytes]:
        import onnx

        flavor = self.canonical_flavor(request.flavor) or "Linux"
        model = onnx.load_from_string(request.onnx)
        props = {p.key: p.value for p in model.metadata_props}
        # app.py reads the pixel convention from the model, in the names Azure's ONNX files use
        props.update({"Image.BitmapPixelFormat": "Rgb8", "Image.NominalPixelRange": "NominalRange_0_255",
                      **request.metadata})
        # app.py answers "unknown" from this threshold (the manifest's, which the app folder does not hold)
        unknown = request.manifest.get("UnknownOutput")
        if unknown is not None:
            props["unknownThreshold"] = repr(float(unknown["threshold"]))
        del model.metadata_props[:]
        for k, v in props.items():
            model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=str(v)))
        size = int(model.graph.input[0].type.tensor_type.shape.dim[2].dim_value)
        serialized: bytes = model.SerializeToString()
        app = (Path(__file__).with_name("container_app.py")).read_bytes()
        request.manifest.update({"ExportFormat": "DockerFile", "Flavor": flavor, "BaseImage": BASE_IMAGES[flavor],
                                 "ModelFileName": f"{FOLDER}/model.onnx", "App": f"{FOLDER}/app.py"})
        return {
            f"{FOLDER}/Dockerfile": dockerfile(flavor).encode(),
            f"{FOLDER}/app.py": app,
            f"{FOLDER}/model.onnx": serialized,
            f"{FOLDER}/labels.txt": ("\n".join(request.tag_names) + "\n").encode(),
            f"{FOLDER}/requirements.txt": requirements().encode(),
            f"{FOLDER}/README.md": readme(flavor, size).encode(),
        }
