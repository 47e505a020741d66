"""The offline learning loop: labels, calibration metrics, evaluation, reports and dataset exports.

The only package that imports scikit-learn and matplotlib; nothing on the request path imports it."""
