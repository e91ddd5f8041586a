"""The 16 entry-level categories of the cue-conflict stimuli and the ImageNet-1k classes behind each.

Data, not code: the class indices per category as the model-vs-human toolbox uses them to turn a
1000-way ImageNet classifier into a 16-way one (Geirhos et al., "ImageNet-trained CNNs are biased
towards texture", ICLR 2019; toolbox: https://github.com/bethgelab/model-vs-human,
``modelvshuman/helper/human_categories.py``, the ``<category>_indices`` lists, and
``modelvshuman/datasets/decision_mappings.py``, ``ImageNetProbabilitiesTo16ClassesMapping``: the
softmax probabilities of a category's classes are averaged, and the decision is the category with the
largest average). RepLKNet's Appendix C uses this toolbox for Figure 5.

Indices are 0-based positions in the standard ILSVRC-2012 class order (sorted WordNet ids).
"""

from __future__ import annotations

IMAGENET_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90, 91, 92, 93,
             94, 95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138, 139, 140, 141,
             142, 143, 144, 145),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": tuple(range(152, 192)) + tuple(range(193, 204)) + tuple(range(205, 227)) + tuple(range(228, 242))
           + tuple(range(243, 251)) + tuple(range(252, 258)) + (259, 261, 262, 263, 265, 266, 267, 268),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}

CATEGORIES: tuple[str, ...] = tuple(sorted(IMAGENET_INDICES))
"""The 16 categories in the toolbox's order (alphabetical)."""
