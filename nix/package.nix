{
  lib,
  python3Packages,
}:

python3Packages.buildPythonApplication {
  pname = "mail-monitor";
  version = (lib.importTOML ../pyproject.toml).project.version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../README.md
      ../LICENSE
      ../mail_monitor
      ../tests
      ../docs
      ../scripts
    ];
  };

  build-system = [ python3Packages.hatchling ];

  dependencies = with python3Packages; [
    authres
    defusedxml
    dkimpy
    dnspython
    imapclient
    prometheus-client
    publicsuffixlist
    pyspf
    requests
    tomli-w
  ];

  nativeCheckInputs = with python3Packages; [
    cryptography
    pytestCheckHook
  ];

  # The end-to-end tests start a real Postfix and Dovecot and need root; they run in CI
  # (.ci/run) and in the NixOS VM test (nix/tests/vm.nix). Here: everything without a
  # mail server or network.
  pytestFlagsArray = [ "-m 'not mailstack'" ];
  disabledTestPaths = [
    "tests/test_prometheus.py" # needs promtool
    "tests/test_nix.py" # needs nix-instantiate and a nixpkgs tree
  ];

  pythonImportsCheck = [ "mail_monitor" ];

  postInstall = ''
    install -Dm644 docs/prometheus/mail-monitor.rules.yml -t $out/share/mail-monitor
    install -Dm644 docs/grafana/mail-monitor.json -t $out/share/mail-monitor
  '';

  meta = {
    description = "End-to-end monitor for a self-hosted mail server: IMAP, SMTP, delivery and TLS, with ntfy alerts and Prometheus metrics";
    homepage = "https://github.com/mail-monitor/mail-monitor";
    license = lib.licenses.mit;
    mainProgram = "mail-monitor";
    platforms = lib.platforms.linux;
  };
}
