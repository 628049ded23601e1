"""Is my mail trusted? The probe's SPF, DKIM and DMARC, the domain's DNS posture, blocklists.

Pure logic over injected seams: a :class:`~mail_monitor.deliverability.dns.Resolver` for every
DNS question and a fetcher for the MTA-STS policy. The libraries that do the protocol work
(dnspython, dkimpy, pyspf, authres, publicsuffixlist) are imported inside the functions that
need them, so a run without deliverability checks never pays for importing them.
"""
