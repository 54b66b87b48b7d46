"""Training: the model, data and precision set-up (``components``) and the loop
(``trainer``); ``train_hybrid.py`` is the command line."""
