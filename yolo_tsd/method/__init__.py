"""The method: pure tensor functions of the paper's rules and terms, no training objects.

``significance`` scores every anchor for both tasks, for teacher and student, and turns the key and weak areas into
per-anchor weights; ``losses`` holds the feature, class-logit and box-distribution terms those weights apply to.
"""
