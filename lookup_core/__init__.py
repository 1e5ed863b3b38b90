"""The core: phone numbers, the value types and the errors every layer shares.

No Flask and no I/O: it imports only the standard library, ``phonenumbers`` and ``marshmallow``.
The layers above (``crm_backends``, then ``lookup_service``) import it; it imports none of them.
"""
