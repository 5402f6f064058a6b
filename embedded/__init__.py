"""The embedded run: `manage.py up` (web server, loops and local pilots on SQLite, with a demo
workflow and campaign), `manage.py run_loops` (the loops without Celery) and the demos they submit.

It sits on the top floor, beside `config/`: it may use every app, and no app imports it.
"""
