"""`python -m services.smtp_sink`"""

import logging

from services.common.http import run_http_service
from services.common.logs import configure_logging
from services.common.runtime import tune_gc
from services.common.settings import Settings
from services.smtp_sink.app import SERVICE, create_app

tune_gc()
settings = Settings()
configure_logging(SERVICE, level=settings.log_level, fmt=settings.log_format)
# aiosmtpd logs every SMTP command at INFO; at tens of thousands of mails that drowns the log.
logging.getLogger("mail.log").setLevel(logging.WARNING)
run_http_service(create_app(settings), settings.bind_host, settings.smtp_sink_http_port)
