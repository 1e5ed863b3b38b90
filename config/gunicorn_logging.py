"""gunicorn's logger: numbers masked in access-log lines, the service's redaction on every line,
and with ``LOG_FORMAT=json`` the access log as JSON objects like the application's log."""

import os

from gunicorn.glogging import Logger

from lookup_core.redact import mask_numbers
from lookup_service.logs import redact_handlers


class MaskingLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        self.json = os.environ.get("LOG_FORMAT", "text").strip().lower() == "json"
        # the application adds its secrets in each worker (lookup_service.logs.configure_logging)
        for log in (self.error_log, self.access_log):
            redact_handlers(log, [], "json" if self.json else None)

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("U", "r", "q", "{raw_uri}e"):
            if key in atoms and atoms[key]:
                atoms[key] = mask_numbers(str(atoms[key]))
        return atoms

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return None
        if not self.json:  # the atoms that can hold a number are masked one by one (atoms above), so
            # the line is not masked as a whole: its status, size and duration would read as a number
            safe_atoms = self.atoms_wrapper_class(self.atoms(resp, req, environ, request_time))
            self.access_log.info(self.cfg.access_log_format, safe_atoms, extra={"_lookup_redacted": True})
            return None
        status = getattr(resp, "status_code", None) or str(getattr(resp, "status", "") or "").split(" ")[0]
        path = mask_numbers(str(environ.get("PATH_INFO") or getattr(req, "path", "") or ""))
        method = environ.get("REQUEST_METHOD") or getattr(req, "method", None)
        fields = {
            "request_id": environ.get("lookup.request_id"),
            "tenant": environ.get("lookup.tenant"),
            "method": method,
            "path": path,
            "status": int(status) if str(status).isdigit() else status,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "bytes": getattr(resp, "sent", None) or getattr(resp, "response_length", None),
            "remote": environ.get("REMOTE_ADDR"),
        }
        self.access_log.info("%s %s %s", method, path, fields["status"],
                             extra={k: v for k, v in fields.items() if v is not None} | {"_lookup_redacted": True})
        return None

