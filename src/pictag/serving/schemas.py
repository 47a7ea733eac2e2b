"""The JSON the server sends, as pydantic models: they document the API in ``/docs`` (OpenAPI)
and the tests validate real responses against them, so the documentation cannot drift."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ObjectOut(BaseModel):
    label: str
    score: float
    box: list[float] = Field(description="[x1, y1, x2, y2] in the uploaded image's pixels")


class MaskOut(BaseModel):
    png: str = Field(
        description="Base64 palette PNG at the uploaded image's own size whose pixel values "
        "are class indices (into classes); its palette holds the class colours"
    )
    classes: list[str] = Field(description="All the head's classes, in index order")


class HeadPredictionOut(BaseModel):
    kind: str = Field(description="multiclass, multilabel, detection or segmentation")
    labels: list[str] = Field(
        description="The decision: the top class, the tags over their thresholds, the "
        "classes of the boxes found, or the classes on the mask (largest first)"
    )
    scores: dict[str, float] = Field(
        description="Label -> probability, high to low (segmentation: label -> share of the "
        "image's pixels, largest first)"
    )
    objects: list[ObjectOut] | None = Field(
        None, description="Detection heads: the boxes found, best first"
    )
    mask: MaskOut | None = Field(
        None, description="Segmentation heads: the class of each pixel of the uploaded image"
    )


class PredictionOut(BaseModel):
    source: str = Field(description="The uploaded file's name, or images[i] for base64 input")
    heads: dict[str, HeadPredictionOut] = Field(description="Head name -> its prediction")
    error: str | None = Field(None, description="Always null: a bad image fails the request")


class ModelSummary(BaseModel):
    name: str = Field(description="The run folder's name")
    checkpoint_id: str | None = Field(None, description="Changes whenever the weights change")
    version: str = Field(description="pictag version of the server")


class PredictResponse(BaseModel):
    predictions: list[PredictionOut] = Field(description="One per image, in request order")
    model: ModelSummary


class HeadInfo(BaseModel):
    name: str
    kind: str = Field(
        description="multiclass (softmax, one label), multilabel (sigmoid, tags), detection "
        "(boxes) or segmentation (a class per pixel)"
    )
    labels: list[str]
    thresholds: list[float] | None = Field(
        None, description="Multilabel: per-label decision thresholds, in label order"
    )
    decision: dict[str, Any] = Field(
        default_factory=dict,
        description="How the head decides, as its kind exports it: activation, decision rule "
        "and parameters (e.g. a binary head's positive class and threshold)",
    )


class ModelInfo(ModelSummary):
    backbone: str | None = None
    backend: str = Field(description="What runs the model: onnxruntime, openvino or torch")
    heads: list[HeadInfo]
    preprocess: dict[str, Any] = Field(description="input_size, mean, std, interpolation, crop_pct")
    limits: dict[str, int] = Field(description="What one request may hold")


class Health(BaseModel):
    status: str = Field(description="ok")
    active_requests: int = Field(description="Requests in the server: read, decoded or waiting")
    max_queue: int = Field(description="Most requests in the server; one more gets 503")
    queued_images: int = Field(description="Images waiting for the model")
    batches: int = Field(description="Model calls so far")
    images: int = Field(description="Images through the model so far")
    images_per_batch: float = Field(description="Mean images per model call so far")


class ErrorOut(BaseModel):
    error: str = Field(description="Stable code, e.g. not_an_image, too_many_pixels, busy")
    detail: str = Field(description="What is wrong and how to fix it")


# The request bodies, written out because /predict reads its body itself (to accept both
# multipart and JSON, and to give its own messages).
PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One or more images (JPEG, PNG, WebP, GIF, BMP, TIFF)",
                    }
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["images"],
                "properties": {
                    "images": {
                        "type": "array",
                        "items": {"type": "string", "format": "byte"},
                        "description": "Base64-encoded image files (a data: URL is accepted)",
                    }
                },
            }
        },
    },
}

EXPLAIN_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "head"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "head": {"type": "string", "description": "The head to explain"},
                    "label": {
                        "type": "string",
                        "description": "The label to explain (default: the most probable)",
                    },
                },
            }
        }
    },
}
