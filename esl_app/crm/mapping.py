"""CRM users → extensions: by the configured mapping, else by the employee's e-mail.

The mapping (per source, in the service config) maps a CRM user id or e-mail to
an extension.  Without an entry, the CRM user's e-mail is looked up among the
company's employees in the store (``email`` of each employee record).  The
answer must be an employee *of this company*; anything else maps to nothing.
The e-mail index is rebuilt when the store's config generation changes.
"""
from __future__ import annotations

import threading

from fastpath import records as rec

from .base import CrmAnswer


class ExtensionMapper:
    def __init__(self, store, company: str, mapping: dict | None = None):
        self.store = store
        self.company = company
        self.mapping = {str(k).strip().casefold(): str(v).strip() for k, v in (mapping or {}).items()}
        self._lock = threading.Lock()
        self._generation = -1
        self._by_email: dict[str, str] = {}
        self._extensions: frozenset[str] = frozenset()

    def _employees(self) -> tuple[dict[str, str], frozenset[str], int]:
        generation = self.store.generation()
        with self._lock:
            if generation != self._generation:
                by_email, extensions = {}, set()
                with self.store.env.begin() as txn:
                    for key, value in txn.cursor(db=self.store.db["ext"]):
                        if value[:1] != bytes((rec.REC_EMPLOYEE,)):
                            continue
                        employee = rec.decode_employee(key.decode(), value)
                        if employee.company != self.company:
                            continue
                        extensions.add(employee.extension)
                        if employee.email:
                            by_email.setdefault(employee.email.strip().casefold(), employee.extension)
                self._by_email, self._extensions, self._generation = by_email, frozenset(extensions), generation
            return self._by_email, self._extensions, self._generation

    def extension_for(self, answer: CrmAnswer) -> str | None:
        """The extension of the CRM user in ``answer``, or None when it maps to no employee of the company."""
        return self.map(answer)[0]

    def map(self, answer: CrmAnswer) -> tuple[str | None, int]:
        """``(extension or None, config generation it was checked against)``."""
        by_email, extensions, generation = self._employees()
        email = answer.user_email.strip().casefold()
        candidates = (answer.extension,
                      self.mapping.get(answer.user_id.strip().casefold()) if answer.user_id else None,
                      self.mapping.get(email) if email else None,
                      by_email.get(email) if email else None)
        for ext in candidates:
            if ext and ext in extensions:
                return ext, generation
        return None, generation
