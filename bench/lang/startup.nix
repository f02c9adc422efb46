# Start-up cost only: the smallest evaluation.
1
