"""Is my mail trusted? The probe's SPF, DKIM and DMARC, the domain's DNS posture, blocklists.

Entry points, each a pure function over plain values and injected seams:

- :func:`.probe.evaluate_probe` and :func:`.probe.judge`: the route checks ``spf``, ``dkim``,
  ``dmarc`` on the received probe (spec 8.1);
- :mod:`.posture`: ``check_mx``, ``check_spf``, ``check_dkim``, ``check_dmarc``,
  ``check_mta_sts``, ``check_tls_rpt``, ``check_ptr`` and ``sending_ips`` (spec 8.2);
- :func:`.blocklists.check_blocklists` (spec 8.3).

Every DNS question goes through a :class:`.dns.Resolver` and the MTA-STS policy through a
:class:`.mta_sts.PolicyFetcher`. The libraries that do the protocol work (dnspython, dkimpy,
pyspf, authres, publicsuffixlist) are imported inside the functions that need them, so a run
without deliverability checks never pays for importing them.
"""
