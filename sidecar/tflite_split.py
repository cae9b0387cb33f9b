"""Run a .tflite model whose graph has MediaPipe custom ops on stock LiteRT: the graph is cut at the
custom ops into builtin-only parts (each its own interpreter, XNNPACK as usual) and the custom ops run
here in numpy, between them. Used for ``face_landmark_with_attention.tflite`` (468 landmarks plus refined
eyes and irises in one model), whose ``Landmarks2TransformMatrix``, ``TransformTensorBilinear`` and
``TransformLandmarks`` ops LiteRT does not have. The numpy ops follow MediaPipe's v2 kernels
(mediapipe/util/tflite/operations/*.cc), in float64.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Options = dict[str, Any]


def landmarks_to_transform_matrix(landmarks: np.ndarray, o: Options) -> np.ndarray:
    """(1, N, 3) landmarks -> (1, 4, 4): from a crop of o["output_width"] x o["output_height"] to the
    landmarks' space, around the ``subset_idxs`` landmarks rotated level by the two rotation landmarks."""
    p = landmarks[0]
    left, right = p[int(o["left_rotation_idx"])], p[int(o["right_rotation_idx"])]
    rot = float(o["target_rotation_radians"]) - math.atan2(float(right[1] - left[1]), float(right[0] - left[0]))
    xy = p[np.asarray(o["subset_idxs"], np.intp), :2].astype(np.float64)
    c, s = math.cos(rot), math.sin(rot)
    rx, ry = xy[:, 0] * c - xy[:, 1] * s, xy[:, 0] * s + xy[:, 1] * c
    x_lo, x_hi, y_lo, y_hi = float(rx.min()), float(rx.max()), float(ry.min()), float(ry.max())
    mx, my = (x_lo + x_hi) / 2.0, (y_lo + y_hi) / 2.0
    cx, cy = mx * c + my * s, -mx * s + my * c  # the crop centre rotated back
    ow, oh = float(o["output_width"]), float(o["output_height"])
    sx, sy = float(o["scale_x"]) * (x_hi - x_lo) / ow, float(o["scale_y"]) * (y_hi - y_lo) / oh
    # shift(centre) @ rotate(-rot) @ scale @ shift(-output / 2), as the kernel multiplies them
    m = np.eye(4)
    m[0, 0], m[0, 1], m[1, 0], m[1, 1] = c * sx, s * sy, -s * sx, c * sy
    m[0, 3] = cx - (c * sx * ow + s * sy * oh) / 2.0
    m[1, 3] = cy - (-s * sx * ow + c * sy * oh) / 2.0
    return m.astype(np.float32)[None]


@functools.lru_cache(maxsize=8)
def _pixel_centres(oh: int, ow: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.divmod(np.arange(oh * ow, dtype=np.float64), ow)
    return xs + 0.5, ys + 0.5


def transform_tensor_bilinear(feature: np.ndarray, matrix: np.ndarray, o: Options) -> np.ndarray:
    """Sample (1, H, W, C) at an oh x ow grid mapped through ``matrix`` (pixel centres), bilinear; a sample
    outside the map is 0."""
    _, h, w, ch = feature.shape
    oh, ow = int(o["output_height"]), int(o["output_width"])
    m = matrix[0].astype(np.float64)
    xs, ys = _pixel_centres(oh, ow)
    tx = m[0, 0] * xs + m[0, 1] * ys + (m[0, 3] - 0.5)
    ty = m[1, 0] * xs + m[1, 1] * ys + (m[1, 3] - 0.5)
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    tx, ty = np.where(inside, tx, 0.0), np.where(inside, ty, 0.0)  # an outside sample weighs 0 below
    x0, y0 = np.floor(tx), np.floor(ty)
    fx, fy = tx - x0, ty - y0
    x0i, y0i = x0.astype(np.intp), y0.astype(np.intp)
    # inside the map the top-left neighbour is on it; the other three may sit one past the last row or
    # column only where their weight is exactly 0, so clipping them changes nothing
    x1i, y1i = np.minimum(x0i + 1, w - 1), np.minimum(y0i + 1, h - 1)
    idx = np.stack([y0i * w + x0i, y0i * w + x1i, y1i * w + x0i, y1i * w + x1i], axis=1)  # (n, 4)
    wt = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=1) * inside[:, None]
    near = feature[0].reshape(h * w, ch)[idx]  # (n, 4, ch): the four neighbours of every sample
    out = np.matmul(wt.astype(np.float32)[:, None, :], near)[:, 0, :]
    return np.asarray(out, np.float32).reshape(1, oh, ow, ch)


def transform_landmarks(landmarks: np.ndarray, matrix: np.ndarray, o: Options) -> np.ndarray:
    """(1, N, 2 or 3) landmarks through the 4x4 ``matrix`` (x, y only; z kept)."""
    m = matrix[0].astype(np.float64)
    out = landmarks[0].astype(np.float64)
    out[:, :2] = out[:, :2] @ m[:2, :2].T + m[:2, 3]
    return np.asarray(out[None], np.float32)


CUSTOM_OPS: dict[str, Callable[..., np.ndarray]] = {
    "Landmarks2TransformMatrix": landmarks_to_transform_matrix,
    "TransformTensorBilinear": transform_tensor_bilinear,
    "TransformLandmarks": transform_landmarks,
}


@dataclass
class _HostOp:
    kind: str
    inputs: list[int]
    output: int
    options: Options


@dataclass
class _Part:
    interp: Any
    inputs: list[tuple[int, int]] = field(default_factory=list)  # (model tensor, this interpreter's tensor)
    outputs: list[tuple[int, int]] = field(default_factory=list)


class SplitModel:
    """A model cut at its custom ops. ``run(x)`` returns the wanted outputs by name; ``outputs`` lists only
    what is needed for them (everything else, e.g. the lips of the face model, is left out of the graph)."""

    def __init__(self, path: Path, outputs: Iterable[str], threads: int = 1) -> None:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.interpreter import Interpreter
        from flatbuffers import flexbuffers

        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
        sg = model.subgraphs[0]
        names = [t.name.decode() for t in sg.tensors]
        outputs = list(outputs)
        missing = [n for n in outputs if n not in names]
        if missing:
            raise ValueError(f"{path.name} has no tensor {', '.join(missing)}")
        wanted = [names.index(n) for n in outputs]
        custom = [c.customCode.decode() if c.customCode else None for c in model.operatorCodes]
        producer = {o: k for k, op in enumerate(sg.operators) for o in op.outputs}
        needed: set[int] = set()
        stack = list(wanted)
        while stack:  # the ops the wanted outputs depend on
            p = producer.get(stack.pop())
            if p is not None and p not in needed:
                needed.add(p)
                stack.extend(i for i in sg.operators[p].inputs if i >= 0)
        const = {i for i, t in enumerate(sg.tensors) if t.buffer and model.buffers[t.buffer].data is not None
                 and len(model.buffers[t.buffer].data)}
        const_ops: set[int] = set()
        for k in sorted(needed):  # e.g. DEQUANTIZE of fp16 weights: goes with the part that reads it
            op = sg.operators[k]
            if custom[op.opcodeIndex] is None and all(i < 0 or i in const for i in op.inputs):
                const_ops.add(k)
                const.update(op.outputs)
        level: dict[int, int] = {}
        parts: dict[int, list[int]] = {}
        self._host: dict[int, list[_HostOp]] = {}
        for k in sorted(needed - const_ops):  # topological order, as stored
            op = sg.operators[k]
            lv = 0
            for i in op.inputs:
                p = producer.get(i)
                if i >= 0 and p is not None and p not in const_ops:
                    lv = max(lv, level[p] + (1 if custom[sg.operators[p].opcodeIndex] else 0))
            level[k] = lv
            kind = custom[op.opcodeIndex]
            if kind is None:
                parts.setdefault(lv, []).append(k)
                continue
            if kind not in CUSTOM_OPS:
                raise ValueError(f"{path.name}: custom op {kind} has no implementation here")
            opts = flexbuffers.Loads(bytes(op.customOptions)) if op.customOptions is not None else {}
            if "subset_idxs" in opts:  # an index array once, not a list every frame
                opts["subset_idxs"] = np.asarray(opts["subset_idxs"], np.intp)
            self._host.setdefault(lv, []).append(_HostOp(kind, list(op.inputs), op.outputs[0], opts))
        self._parts: dict[int, _Part] = {}
        for lv, ops in parts.items():
            members = set(ops)
            stack = [i for k in ops for i in sg.operators[k].inputs if i >= 0]
            while stack:  # the constant producers this part reads
                p = producer.get(stack.pop())
                if p is not None and p in const_ops and p not in members:
                    members.add(p)
                    stack.extend(i for i in sg.operators[p].inputs if i >= 0)
            made = {o for k in members for o in sg.operators[k].outputs}
            read_outside = set(wanted) | {i for k in needed - members for i in sg.operators[k].inputs}
            ins = list(dict.fromkeys(i for k in sorted(members) for i in sg.operators[k].inputs
                                     if i >= 0 and i not in made and i not in const))
            outs = [o for k in sorted(members) for o in sg.operators[k].outputs if o in read_outside]
            piece = copy.copy(model)
            g = copy.copy(sg)
            g.operators = [sg.operators[k] for k in sorted(members)]
            g.inputs, g.outputs = ins, outs
            piece.subgraphs, piece.signatureDefs = [g], []
            builder = flatbuffers.Builder(1 << 20)
            builder.Finish(piece.Pack(builder), file_identifier=b"TFL3")
            interp = Interpreter(model_content=bytes(builder.Output()), num_threads=threads)
            interp.allocate_tensors()
            by_name_in = {d["name"]: d["index"] for d in interp.get_input_details()}
            by_name_out = {d["name"]: d["index"] for d in interp.get_output_details()}
            self._parts[lv] = _Part(interp, [(i, by_name_in[names[i]]) for i in ins],
                                    [(o, by_name_out[names[o]]) for o in outs])
        self._levels = sorted(set(self._parts) | set(self._host))
        self._input = sg.inputs[0]
        self._wanted = dict(zip(outputs, wanted, strict=True))

    def run_into(self, fill: Callable[[np.ndarray], object]) -> dict[str, np.ndarray]:
        """Invoke on an input that ``fill`` writes straight into the first part's input tensor."""
        first = self._parts[self._levels[0]]
        slot = dict(first.inputs)[self._input]
        fill(first.interp.tensor(slot)())  # the view dies here: invoke refuses while one is alive
        vals: dict[int, np.ndarray] = {}
        for lv in self._levels:  # a level's custom ops read its part's outputs (or earlier levels')
            part = self._parts.get(lv)
            if part is not None:
                for i, slot in part.inputs:
                    if i != self._input:
                        part.interp.set_tensor(slot, vals[i])
                part.interp.invoke()
                for o, slot in part.outputs:
                    vals[o] = part.interp.get_tensor(slot)
            for h in self._host.get(lv, ()):
                vals[h.output] = CUSTOM_OPS[h.kind](*(vals[i] for i in h.inputs), h.options)
        return {n: vals[i] for n, i in self._wanted.items()}
