# Shortcuts for developers; the README's two commands are the scripts themselves.
.PHONY: up test lint fmt docs
up:
	./scripts/up.sh
test:
	./scripts/test.sh
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy . && .venv/bin/lint-imports --no-cache
fmt:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
docs:
	.venv/bin/mkdocs serve
