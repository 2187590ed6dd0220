"""Certificates made in the test (cluster/certificates.py): valid for loopback, or
expired."""

import datetime

from cluster import certificates
from cluster.certificates import Issued

LOOPBACK = ("localhost", "127.0.0.1")


class Authority:
    """A certificate authority whose files live in `directory`."""

    def __init__(self, directory: str, name: str = "regraft test CA") -> None:
        self._authority = certificates.Authority.create(directory, name, days=30)
        self.directory = directory
        self.ca_file = self._authority.ca_file

    def issue(self, name: str, expired: bool = False, file_name: str = "") -> Issued:
        """A certificate for `name` (CN) valid for loopback as server and client."""
        if expired:
            start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
            return self._authority.issue(name, LOOPBACK, 9, start, file_name)
        return self._authority.issue(name, LOOPBACK, 7, file_name=file_name)
