# NixOS VM test, modelled on nixpkgs' prometheus exporter tests: a machine runs Postfix,
# Dovecot, node_exporter and our module; the timer's first run must find mail working.
# Run with: nix build .#checks.x86_64-linux.vm (needs KVM).
{ self }:
{ ... }:
{
  name = "mail-monitor";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];

      networking.domain = "example.test";
      users.users.monitor = {
        isNormalUser = true;
        password = "vm-test-password";
      };
      # The secret lives outside the Nix store, as it would with sops-nix or agenix.
      systemd.tmpfiles.rules = [ "f+ /run/secrets/mail-monitor 0400 root root - vm-test-password" ];

      services.postfix = {
        enable = true;
        settings.main = {
          smtpd_sasl_auth_enable = true;
          smtpd_sasl_type = "dovecot";
          smtpd_sasl_path = "private/auth";
          smtpd_relay_restrictions = [
            "permit_sasl_authenticated"
            "reject_unauth_destination"
          ];
        };
      };
      services.dovecot2 = {
        enable = true;
        enableImap = true;
        mailLocation = "mbox:~/mail:INBOX=/var/spool/mail/%u";
        extraConfig = ''
          disable_plaintext_auth = no
          service auth {
            unix_listener /var/lib/postfix/queue/private/auth {
              mode = 0660
              user = postfix
              group = postfix
            }
          }
        '';
      };
      services.prometheus.exporters.node.enable = true;

      services.mail-monitor = {
        enable = true;
        interval = "1min";
        randomizedDelay = "0";
        smtp = {
          host = "localhost";
          port = 25;
          tls = "none";
        };
        imap = {
          port = 143;
          tls = "none";
          extraFolders = [ ];
        };
        credentials = {
          username = "monitor";
          passwordFile = "/run/secrets/mail-monitor";
        };
        testRecipient = "monitor@localhost";
        metrics.textfile.enable = true;
        settings.monitor.deadline = "1m";
      };
    };

  testScript = ''
    machine.wait_for_unit("postfix.service")
    machine.wait_for_unit("dovecot.service")
    machine.wait_for_unit("prometheus-node-exporter.service")
    machine.wait_for_open_port(25)
    machine.wait_for_open_port(143)

    # interval = "1min" is OnCalendar=*:0/1: wait for the first run to finish.
    machine.wait_until_succeeds("test -f /var/lib/mail-monitor/state.json", timeout=300)
    machine.succeed("grep -q '\"status\": \"OK\"' /var/lib/mail-monitor/state.json")
    machine.succeed(
        "grep -q 'mail_monitor_check_success{check=\"receive\",route=\"default\"} 1.0' "
        "/var/lib/prometheus-node-exporter-text-files/mail_monitor.prom"
    )
    machine.wait_until_succeeds("curl -sf http://localhost:9100/metrics | grep -q '^mail_monitor_status 0'")
    # The password never reaches the store, the journal or the metrics.
    machine.fail("grep -r vm-test-password /var/lib/mail-monitor /var/lib/prometheus-node-exporter-text-files")
    machine.fail("journalctl -u mail-monitor.service | grep -q vm-test-password")
  '';
}
