"""``python -m coalmine``: run the operator."""

from coalmine.main import cli

cli()
