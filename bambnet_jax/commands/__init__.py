"""The user commands (deblur, coc, report, quickstart) and the pipeline that chains training and evaluation."""
