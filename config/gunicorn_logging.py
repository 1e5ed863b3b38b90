"""gunicorn's logger with phone numbers masked in access-log lines."""

from gunicorn.glogging import Logger

from lookup_service.logs import mask_numbers


class MaskingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("U", "r", "q", "{raw_uri}e"):
            if key in atoms and atoms[key]:
                atoms[key] = mask_numbers(str(atoms[key]))
        return atoms
