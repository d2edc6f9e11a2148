"""Model cards for the imaging models, rendered from the metadata JSON that train.py writes.

python training/imaging/card.py src/tianfu/imaging/models/*.json   # re-render without retraining
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MEDMNIST = (
    "MedMNIST v2: Yang J, Shi R, Wei D, et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and "
    "3D biomedical image classification. Scientific Data 2023;10:41. Licence of this subset: CC BY 4.0 (code "
    "Apache-2.0); the MedMNIST README states the data are NOT intended for clinical use. The model is a "
    "derivative of the data: keep both attributions."
)

PROSE: dict[str, dict[str, Any]] = {
    "pneumonia": {
        "scale": "a 2,048 px chest film gives 73x73 original pixels per model pixel (1.5 cm of a 43 cm film)",
        "data": (
            "PneumoniaMNIST: paediatric chest radiographs from Kermany DS et al., Identifying Medical "
            "Diagnoses and Treatable Diseases by Image-Based Deep Learning, Cell 2018;172(5):1122-1131, "
            "centre-cropped and resized to 28x28 grey by MedMNIST. Labels 0 normal, 1 pneumonia (bacterial "
            "and viral pooled)."
        ),
        "augment": (
            "no flips: a mirrored chest film puts the heart on the right (dextrocardia/situs inversus is a "
            "finding in itself) and mirrors side markers, and the model should not learn that mirrored "
            "anatomy is normal; rotation within +-10 deg, shift +-8 %, zoom +-8 % and brightness/contrast "
            "jitter mimic positioning and exposure differences."
        ),
        "published": (
            "Published AUC/ACC on the official *test* split (MedMNIST v2): ResNet-18 (28) 0.944/0.854, "
            "ResNet-50 (224) 0.962/0.884, Google AutoML Vision 0.991/0.946. Our numbers are on *val* (never "
            "used for any choice here); val comes from the same pool as train, the test split was held out "
            "from our copy of the data and is the fair comparison - expect lower numbers there."
        ),
        "limits": [
            "Children only (the source cohort is paediatric): do not apply to adult films; `cxr-abnormal` is "
            "the adult model and is much weaker.",
            "Pneumonia vs normal only: any other abnormality (effusion, mass, cardiomegaly, lines and tubes) "
            "is outside the label set and may score either way.",
        ],
    },
    "breast": {
        "scale": "a 500 px ultrasound frame gives ~18x18 original pixels per model pixel",
        "data": (
            "BreastMNIST: breast ultrasound images from Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset "
            "of breast ultrasound images. Data in Brief 2020;28:104863, resized to 28x28 grey by MedMNIST, "
            "which merges normal and benign into one class: label 0 malignant, 1 normal/benign. The positive "
            "class for screening is **malignant (label 0)**."
        ),
        "augment": (
            "horizontal flips (a B-mode frame has no fixed left/right: probe orientation varies), no "
            "vertical flips (depth runs top to bottom, and posterior acoustic shadowing below a lesion is "
            "itself a sign of malignancy); rotation +-10 deg, shift +-8 %, zoom +-10 %, brightness/contrast "
            "jitter (gain)."
        ),
        "published": (
            "Published AUC/ACC on the official *test* split: ResNet-18 (28) 0.901/0.863, ResNet-50 (224) "
            "0.866/0.842, AutoML Vision 0.919/0.861. Ours are on *val* (78 images, 21 malignant), never used "
            "for a choice: the 95 % interval is wide and differences of +-0.02 are noise."
        ),
        "selection": (
            "Recipe of 1.1.0 chosen by 5-fold stratified cross-validation on the 546 train images only "
            "(`training/imaging/breast_cv.py`; each fold repeats the shipped protocol with its own 15 % tune"
            " split; criterion: mean held-out-fold AUC). The 1.0.0 recipe (3 members, epoch with the best "
            "tune AUC, no flip) scored 0.877; the same networks kept at their last epoch and averaged over "
            "the image and its mirror image scored 0.889 (higher in 4 of 5 folds). Mixup (Beta(0.4, 0.4); 2 "
            "seeds: 0.882 vs 0.887 without), stronger augmentation (rotation 15 deg, shift 10 %, zoom 15 %, "
            "more jitter) and 100 instead of 60 epochs (1 seed, single network: 0.868 and 0.869 vs 0.869) "
            "did not help and were dropped. 4 members scored like 3 (0.888 vs 0.889): 5 are shipped for "
            "stability, not for a measured gain. The val numbers of 1.0.0 (AUC 0.916) were known before this"
            " search; val was read once more, for the table below, after the recipe was fixed."
        ),
        "limits": [
            "Tiny data: 546 training images (464 to fit, 82 to tune with 22 malignant), 78 to report. The "
            "threshold and temperature rest on 22 malignant tune cases, so the real sensitivity at the "
            "operating point may differ by +-0.1 or more.",
            "Single source (one hospital's ultrasound machines); no BI-RADS, no lesion size, no Doppler.",
        ],
    },
    "retina": {
        "scale": "a 1,800 px fundus photograph gives ~64x64 original pixels per model pixel",
        "data": (
            "RetinaMNIST: colour fundus photographs of the DeepDRiD challenge (Liu R et al., DeepDRiD: "
            "Diabetic Retinopathy - Grading and Image Quality Estimation Challenge, Patterns "
            "2022;3(6):100512), resized to 28x28 RGB by MedMNIST. Labels: 5 ordinal diabetic-retinopathy "
            "grades 0-4."
        ),
        "augment": (
            "horizontal and vertical flips and rotation +-25 deg (left and right eyes are mirror images and "
            "the DR grade does not depend on orientation), shift +-6 %, zoom +-8 %, brightness/contrast "
            "jitter; the area outside the fundus is padded black, as in the photographs."
        ),
        "published": (
            "Published AUC/ACC on the official *test* split: ResNet-18 (28) 0.717/0.524, AutoML Vision "
            "0.750/0.531 (best from scratch). Ours are on *val* (120 images), never used for a choice; "
            "quadratic weighted kappa added because grades are ordinal."
        ),
        "limits": [
            "At 28x28 the lesions that define the grades (microaneurysms, small haemorrhages, exudates) are "
            "sub-pixel: the network sees overall colour and large-scale texture, so grade 1 in particular is "
            "hardly separable from grade 0.",
            "Screening decision = referable DR (grade >= 2); the 5-class label is for display, not for "
            "grading.",
        ],
    },
    "cxr-abnormal": {
        "scale": "a 2,048 px chest film gives 32x32 original pixels per model pixel (~7 mm of a 43 cm film)",
        "data": (
            "1,000 frontal chest radiographs (264 patients) of NIH ChestX-ray14 (Wang X, Peng Y, Lu L, Lu Z, "
            "Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on "
            "Weakly-Supervised Classification and Localization of Common Thorax Diseases. CVPR 2017), 64x64, "
            "normal vs abnormal as given in `labels.csv` (NIH labels are text-mined from reports and noisy). "
            "NIH Clinical Center terms: free use with citation of Wang et al. 2017 and acknowledgement of "
            "the NIH Clinical Center."
        ),
        "augment": (
            "no flips (as for `pneumonia`: mirrored anatomy is not normal anatomy); rotation +-8 deg, shift "
            "+-6 %, zoom +-8 %, brightness/contrast jitter."
        ),
        "published": (
            "No published number exists for this ad-hoc subset. Context only: CheXNet per-finding AUROC "
            "0.73-0.94 on the full ChestX-ray14 (112,120 images) with an ImageNet-pretrained DenseNet-121."
        ),
        "limits": [
            "Weak: cross-validated AUC about 0.6 - far too low for triage on its own; shipped to exercise "
            "the adult-CXR pipeline end to end and as a baseline to beat (more data, pretraining, higher "
            "resolution).",
            "At a sensitivity-first operating point the specificity is very low: most studies get flagged.",
            "1,000 images from 264 patients (several images per patient); 'abnormal' presumably pools any of "
            "the 14 ChestX-ray14 finding labels (how the subset was drawn is not documented), most of them "
            "invisible at 64x64.",
        ],
    },
}


HONESTY = (
    "Honesty note: network size, epochs and number of seeds were fixed after one exploratory run per task "
    "whose report-split numbers were seen; no configuration was compared on them."
)


def pct(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def ci(values: Any) -> str:
    return "" if not values else f" (95 % CI {values[0]:.3f}-{values[1]:.3f})"


def render(task: str, meta: dict[str, Any]) -> str:
    prose = PROSE[task]
    onnx = meta["onnx"]
    tr = meta["training"]
    hp = tr["hyperparameters"]
    op = meta["operating_point"]
    m = meta["metrics"]
    pos = meta["positive_name"]
    size = f"{meta['input']['height']}x{meta['input']['width']}"
    # Recipe options added in 1.1.0 (absent from the hyperparameters of models trained without them).
    tta_note = (
        ", each member seeing the image and its mirror image (test-time flip; the mirror image's feature "
        "maps are mirrored back, so the heatmap stays exact and in image coordinates)"
        if hp.get("tta_hflip")
        else ""
    )
    mixup_note = f", mixup Beta({hp['mixup']}, {hp['mixup']})" if hp.get("mixup") else ""
    tune_chose = "epoch, temperature, threshold, heatmap scale all"
    tune_bias = "it chose the epoch, so it is optimistic"
    if hp.get("keep_epoch") == "last":
        tune_chose = "temperature, threshold and heatmap scale"
        tune_bias = "it chose the threshold, so sensitivity and specificity there are optimistic"
        epoch_note = (
            f"Each member keeps its weights at the end of the schedule (epoch {hp['epochs']}; no early "
            "stopping)."
        )
    else:
        epoch_note = (
            f"The epoch kept per member is the one with the best tune AUC (epochs {tr['best_epochs']})."
        )
    lines = [
        f"# Model card - `{task}` ({meta['model_name']} {meta['version']})",
        "",
        f"{meta['title']}. Files: `src/tianfu/imaging/models/{onnx['file']}` ({onnx['bytes'] / 1024:.0f} "
        f"KiB, sha256 `{onnx['sha256']}`) and `{task}.json` (normalisation, classes, temperature, threshold, "
        "head weights for the heatmap, metrics). Serving: `tianfu.imaging.inference` (numpy + onnxruntime); "
        "evaluation: `tianfu.imaging.evaluate`; training: `training/imaging/train.py`, which writes this "
        f"card (re-render: `python training/imaging/card.py src/tianfu/imaging/models/{task}.json`).",
        "",
        "## Intended use",
        "Research prototype and decision support (triage: sort the reading list, draw the reader's eye), "
        "**not for clinical use**, not a medical device, no NMPA registration; a diagnostic claim would need "
        "NMPA Class III. Every output must be shown as preliminary until a doctor signs the report, with the "
        "model name, version and threshold recorded next to it.",
        "",
        "## Data and licence",
        f"- {prose['data']}",
    ]
    if task != "cxr-abnormal":
        lines.append(f"- {MEDMNIST}")
    lines += [
        f"- {'labels.csv' if task == 'cxr-abnormal' else 'Data file'} sha256 `{tr['data_sha256']}`. Split "
        f"used: {tr['split']}.",
        "",
        "## Model",
        f"- {tr['architecture']}: stem conv 3x3, three residual stages of one basic block each "
        f"(stride 1, 2, 2), global average pooling, dropout {hp['dropout']}, one linear layer; "
        f"{tr['parameters']:,} parameters in all; {hp['seeds']} member(s) (seeds {tr['seeds']}) averaged in "
        f"logit space inside one ONNX graph (opset 17){tta_note}.",
        f"- Input: `image` float32 (N, {meta['input']['channels']}, {meta['input']['height']}, "
        f"{meta['input']['width']}): {meta['input']['value_scale']} (mean {meta['input']['mean']}, std "
        f"{meta['input']['std']}, from the fit split). Outputs: `logits` and `features` (last conv maps).",
        f"- Classes: {', '.join(meta['classes'])}; screening score = calibrated P({pos}).",
        f"- onnxruntime vs torch max |diff|: logits {onnx['max_abs_diff_vs_torch']['logits']:.1e}, features "
        f"{onnx['max_abs_diff_vs_torch']['features']:.1e}; serving code (raw uint8 images in) vs "
        f"training-time calibrated probabilities: {meta['checks']['serving_vs_training_max_abs_diff']:.1e} "
        f"on {meta['checks']['n_images']} images.",
        "",
        "## Training",
        f"- Trained from random initialisation (no pretrained weights). AdamW (lr {hp['lr']}, weight decay "
        f"{hp['weight_decay']}), batch {hp['batch']}, {hp['epochs']} epochs, 1 epoch linear warm-up then "
        f"cosine decay, cross-entropy with label smoothing {hp['label_smoothing']}{mixup_note}. {epoch_note}",
        f"- Augmentation: {prose['augment']}",
        f"- The reported split was never used for a choice ({tune_chose} come from the tune split). "
        f"{prose.get('selection', HONESTY)}",
        f"- CPU, {tr['threads']} thread(s): {tr.get('wall_seconds', 'n/a')} s wall, "
        f"{tr.get('cpu_seconds', 'n/a')} s CPU (incl. data loading and export). torch {tr['torch']}, onnx "
        f"{tr['onnx']}, onnxruntime {tr['onnxruntime']}, scikit-learn {tr['scikit_learn']}, Python "
        f"{tr['python']}.",
        "",
        "## Metrics",
    ]
    if "val" in m:
        v = m["val"]
        lines += [
            f"On the official MedMNIST **val** split ({v['n']} images, {v['n_positive']} {pos}), untouched "
            "during training:",
            "",
            "| metric | value |",
            "|---|---|",
            f"| AUC{' (macro one-vs-rest, as MedMNIST)' if 'quadratic_kappa' in v else ''} | {pct(v['auc'])}"
            f"{ci(v.get('auc_ci95'))} |",
            f"| accuracy (argmax class) | {pct(v['accuracy'])} |",
            f"| sensitivity at the operating point | {pct(v['sensitivity'])} |",
            f"| specificity at the operating point | {pct(v['specificity'])} |",
        ]
        if "quadratic_kappa" in v:
            lines += [
                f"| AUC referable DR (grade >= 2 vs < 2) | {pct(v['auc_positive'])} |",
                f"| quadratic weighted kappa (argmax grade) | {pct(v['quadratic_kappa'])} |",
            ]
        lines += [
            f"| NLL before / after temperature | {pct(v['nll_uncalibrated'])} / {pct(v['nll_calibrated'])} |",
            f"| AUC of each member alone{' (no flip)' if hp.get('tta_hflip') else ''} | "
            f"{', '.join(pct(a) for a in v['members_auc'])} |",
            "",
            prose["published"],
        ]
    if "cv" in m:
        cv = m["cv"]
        lines += [
            f"{cv['protocol']}. The whole recipe (training, epoch choice, temperature, threshold) is "
            "repeated inside each fold; the given train/valid/test folders are ignored because patients "
            "leak across them.",
            "",
            "| fold | images | patients | AUC | accuracy | sensitivity | specificity | threshold |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, f in enumerate(cv["folds"], 1):
            lines.append(
                f"| {i} | {f['n']} | {f['patients']} | {pct(f['auc'])} | {pct(f['accuracy'])} | "
                f"{pct(f['sensitivity'])} | {pct(f['specificity'])} | {pct(f['threshold'])} |"
            )
        lines += [
            "",
            f"Mean fold AUC {pct(cv['auc_mean'])} (SD {pct(cv['auc_sd'])}); pooled out-of-fold AUC "
            f"{pct(cv['auc_pooled'])}{ci(cv['auc_pooled_ci95_patient_bootstrap'])[:-1]}, patient bootstrap); "
            f"pooled accuracy {pct(cv['accuracy_pooled'])}, sensitivity {pct(cv['sensitivity_pooled'])}, "
            f"specificity {pct(cv['specificity_pooled'])} at each fold's own threshold.",
            "",
            prose["published"],
        ]
    t = m["tune"]
    if "val" in m:
        reproduce = (
            f"Reproduce the val numbers: `python -m tianfu.imaging.evaluate --task {task} --npz FILE "
            "--split val` (or `tianfu imaging evaluate`); the official test split: `--split test`."
        )
    else:
        reproduce = "The CV numbers are recomputed by every run of the training command below."
    calibration_note = ""
    if "val" in m and m["val"]["nll_calibrated"] > m["val"]["nll_uncalibrated"]:
        calibration_note = (
            f" On val the temperature made the NLL slightly worse ({pct(m['val']['nll_uncalibrated'])} -> "
            f"{pct(m['val']['nll_calibrated'])}): fitted on {t['n']} tune images, the temperature is itself "
            "uncertain."
        )
    lines += [
        "",
        f"Tune split ({t['n']} images; {tune_bias}): AUC {pct(t['auc'])}, "
        f"sensitivity {pct(t['sensitivity'])}, specificity {pct(t['specificity'])}.",
        "",
        reproduce,
        "",
        "## Operating point and calibration",
        f"- Threshold **{op['threshold']:.4f}** on {op['applies_to']}: {op['rule']} (chosen on the tune "
        "split; halfway between the last positive kept and the next lower score). Sensitivity first: a "
        f"missed {pos} costs more than a second look at a normal study.",
        f"- Temperature {meta['calibration']['temperature']:.3f} ({meta['calibration']['method']}). "
        "Temperature scaling keeps the ranking (AUC) and the argmax (accuracy); it only makes the "
        f"probabilities honest on data like the tune split.{calibration_note}",
        "",
        "## Heatmap",
        "Class activation map: the head is linear on globally averaged features, so "
        "`logit contrast = mean over space of sum_k v_k * feature_k + const` exactly; `v` is the mean head "
        f"weight of the positive class(es) minus that of the others, so the map shows evidence *for* {pos}. "
        f"It is ReLU'd, divided by a fixed scale ({meta['cam']['scale']:.3f}: {meta['cam']['scale_rule']}) "
        f"and bilinearly upsampled from the feature grid to the input image size. The feature grid is coarse "
        "(7x7 for 28 px inputs, 8x8 for 64 px): it points to a region, never a lesion outline.",
        "",
        "## Limits",
        f"- **{size} input.** Any image is area-averaged to {size} before inference: {prose['scale']}. Only "
        "large-scale opacity, shape and brightness survive; small nodules, fine lines, pneumothorax edges, "
        "calcifications, microaneurysms do not. A larger image at serving time does not help: the model "
        "never saw more detail than this.",
        "- Inputs are expected as display values (already windowed, MONOCHROME1 inverted), like the "
        "training images; `ImagingModel.predict(image, value_range=(0, 2**BitsStored - 1))` maps raw "
        "high-bit-depth data explicitly.",
        *[f"- {text}" for text in prose["limits"]],
        "- Small evaluation sets: read the confidence intervals; no external, prospective or "
        "Chinese-hospital validation has been done. Local validation and clinical governance are required "
        "before any use.",
        "",
        "## Reproduce",
        "```",
        f"{tr['command']}",
        "```",
        f"Seeded (seed {tr['seeds'][0]}...; splits, initialisation, shuffling and augmentation), "
        "`torch.use_deterministic_algorithms(True)`; bit-identical for the same library versions and "
        "`--threads`. Needs torch (CPU), onnx, onnxruntime, scikit-learn.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    for name in argv:
        path = Path(name)
        meta = json.loads(path.read_text(encoding="utf-8"))
        out = Path(__file__).resolve().parent / f"MODEL_CARD_{meta['task']}.md"
        out.write_text(render(meta["task"], meta), encoding="utf-8")
        print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
