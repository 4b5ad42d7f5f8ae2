"""`python -m services.commands`"""

from services.commands.app import SERVICE, create_app
from services.common.http import run_http_service
from services.common.logs import configure_logging
from services.common.runtime import tune_gc
from services.common.settings import Settings

tune_gc()
settings = Settings()
configure_logging(SERVICE, level=settings.log_level, fmt=settings.log_format)
run_http_service(create_app(settings), settings.bind_host, settings.commands_port, fast=True)
