{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.mail-monitor;
  settingsFormat = pkgs.formats.toml { };

  inherit (lib)
    literalExpression
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    optionalAttrs
    types
    ;

  credentialsPath = name: "$CREDENTIALS_DIRECTORY/${name}";

  # host, port and tls of one server in the simple setup; smtp and imap differ only in defaults.
  endpointOptions =
    {
      server,
      port,
      tls,
      tlsDescription,
    }:
    {
      host = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "mail.example.org";
        description = server;
      };
      port = mkOption {
        type = types.port;
        default = port;
        description = "Port of that server.";
      };
      tls = mkOption {
        type = types.enum [
          "starttls"
          "implicit"
          "none"
        ];
        default = tls;
        description = tlsDescription;
      };
    };
  isStorePath = path: lib.hasPrefix builtins.storeDir (toString path);

  # "5min", "1h 30m", "90": a systemd time span, run every so often (OnUnitActiveSec).
  # Anything else ("hourly", "*:0/5", "Mon *-*-* 04:00") is a calendar expression.
  isTimeSpan =
    interval:
    builtins.match "[[:space:]]*([0-9]+[[:space:]]*(us|ms|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days|w|week|weeks)?[[:space:]]*)+" interval
    != null;

  simpleAccount = cfg.smtp.host != null || cfg.imap.host != null;
  simpleImapSettings = {
    host = if cfg.imap.host != null then cfg.imap.host else cfg.smtp.host;
    inherit (cfg.imap) port tls;
    extra_folders = cfg.imap.extraFolders;
  };
  credentialSettings = lib.filterAttrs (_: value: value != null) {
    address = cfg.credentials.username;
    username = cfg.credentials.username;
    password_file = cfg.credentials.passwordFile;
  };

  # Every secret file named in the configuration, keyed by the credential name that
  # LoadCredential gives it. The generated TOML only ever sees $CREDENTIALS_DIRECTORY/NAME.
  accountSecrets = lib.filterAttrs (_: path: path != null) (
    lib.mapAttrs' (
      name: account:
      lib.nameValuePair "password-${name}" (
        let
          path = account.password_file or null;
        in
        if path == null || lib.hasPrefix "$CREDENTIALS_DIRECTORY" path then null else path
      )
    ) (cfg.settings.accounts or { })
  );

  ntfySettings = cfg.settings.alerts.ntfy or { };
  ntfySecrets = lib.filterAttrs (_: path: path != null && !(lib.hasPrefix "$CREDENTIALS_DIRECTORY" path)) {
    ntfy-token = ntfySettings.token_file or null;
    ntfy-password = ntfySettings.password_file or null;
  };

  secrets = accountSecrets // ntfySecrets;

  # The settings as written to the store: secret paths replaced by credential paths.
  renderedSettings =
    cfg.settings
    // optionalAttrs (cfg.settings ? accounts) {
      accounts = lib.mapAttrs (
        name: account:
        account
        // optionalAttrs (accountSecrets ? "password-${name}") {
          password_file = credentialsPath "password-${name}";
        }
      ) cfg.settings.accounts;
    }
    // optionalAttrs (cfg.settings ? alerts && cfg.settings.alerts ? ntfy) {
      alerts = cfg.settings.alerts // {
        ntfy =
          ntfySettings
          // optionalAttrs (ntfySecrets ? ntfy-token) { token_file = credentialsPath "ntfy-token"; }
          // optionalAttrs (ntfySecrets ? ntfy-password) { password_file = credentialsPath "ntfy-password"; };
      };
    };

  configFile = settingsFormat.generate "mail-monitor.toml" renderedSettings;

  # Seconds in a duration as the program reads it ("90s", "4.5m", "250ms", "1d", 300);
  # null for anything it would refuse.
  durationSeconds =
    value:
    if builtins.isInt value || builtins.isFloat value then
      value
    else
      let
        parts = builtins.match "[[:space:]]*0*([0-9]+)(\\.[0-9]+)?[[:space:]]*(ms|s|m|h|d)?[[:space:]]*" (
          toString value
        );
        number = builtins.fromJSON (builtins.elemAt parts 0 + toString (builtins.elemAt parts 1));
        unit = builtins.elemAt parts 2;
      in
      if !(builtins.isString value) || parts == null then
        null
      else
        number
        * {
          "ms" = 0.001;
          "s" = 1;
          "m" = 60;
          "h" = 3600;
          "d" = 86400;
        }.${if unit == null then "s" else unit};

  deadlineSeconds = durationSeconds (cfg.settings.monitor.deadline or "3m");

  metricsDirectory = cfg.metrics.textfile.directory;
in
{
  options.services.mail-monitor = {
    enable = mkEnableOption "mail-monitor, an end-to-end monitor for your own mail server";

    package = mkPackageOption pkgs "mail-monitor" { };

    interval = mkOption {
      type = types.str;
      default = "5min";
      example = "*:0/10";
      description = ''
        How often to check. A systemd time span such as `"5min"` runs that long after
        boot and after each run (`OnBootSec`, `OnUnitActiveSec`); a calendar expression
        such as `"*:0/10"` or `"hourly"` uses `OnCalendar` with `Persistent=true`.
      '';
    };

    randomizedDelay = mkOption {
      type = types.str;
      default = "30s";
      example = "2min";
      description = "Random delay added to each start (`RandomizedDelaySec`), so many hosts do not probe at once.";
    };

    smtp = endpointOptions {
      server = "Submission server of the simple single-account setup. Use {option}`settings` for more accounts.";
      port = 587;
      tls = "starttls";
      tlsDescription = "`starttls` (port 587), `implicit` (port 465) or `none` (plain text).";
    };

    imap = endpointOptions {
      server = "IMAP server of the simple single-account setup; defaults to {option}`smtp.host`.";
      port = 993;
      tls = "implicit";
      tlsDescription = "`implicit` (port 993), `starttls` (port 143) or `none` (plain text).";
    }
    // {
      extraFolders = mkOption {
        type = types.listOf types.str;
        default = [ "Junk" ];
        example = [ "[Gmail]/Spam" ];
        description = "Folders searched besides INBOX; a test mail found there is reported as spam.";
      };
    };

    credentials = {
      username = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "monitor@example.org";
        description = "Login (and sender address) of the simple single-account setup.";
      };
      passwordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/mail-monitor";
        description = ''
          File holding the password, read by systemd and passed with `LoadCredential`.
          Must not be in the Nix store. Works with sops-nix and agenix paths.
        '';
      };
    };

    testRecipient = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "postmaster@example.org";
      description = "Send the test mail here instead of to {option}`credentials.username`; it must arrive in that IMAP account.";
    };

    receiveTimeout = mkOption {
      type = types.str;
      default = "60s";
      description = "How long to wait for the test mail before the route counts as failed.";
    };

    ntfy = {
      enable = mkEnableOption "ntfy push alerts on state changes";
      server = mkOption {
        type = types.str;
        default = "https://ntfy.sh";
        description = "ntfy server.";
      };
      topic = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "mail-alerts-7f3k";
        description = "ntfy topic; pick something hard to guess on a public server.";
      };
      tokenFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/ntfy-token";
        description = "File holding an ntfy access token (passed with `LoadCredential`).";
      };
    };

    stateDirectory = mkOption {
      type = types.str;
      default = "mail-monitor";
      description = "Directory below {file}`/var/lib` for the state file (systemd `StateDirectory=`).";
    };

    metrics.textfile = {
      enable = mkEnableOption "Prometheus metrics for node_exporter's textfile collector";
      directory = mkOption {
        type = types.str;
        default = "/var/lib/prometheus-node-exporter-text-files";
        description = ''
          Directory for {file}`mail_monitor.prom`. When
          {option}`services.prometheus.exporters.node.enable` is set, its textfile
          collector is turned on for this directory.
        '';
      };
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = literalExpression ''
        {
          accounts.gmail = {
            address = "someone@gmail.com";
            password_file = config.sops.secrets.gmail-app-password.path;
            smtp = { host = "smtp.gmail.com"; port = 587; tls = "starttls"; };
            imap = { host = "imap.gmail.com"; extra_folders = [ "[Gmail]/Spam" ]; };
          };
          routes = [
            { name = "self-to-gmail"; from = "default"; to = "gmail"; receive_timeout = "2m"; }
            { name = "gmail-to-self"; from = "gmail"; to = "default"; receive_timeout = "2m"; }
          ];
        }
      '';
      description = ''
        Configuration of mail-monitor, rendered as TOML; see
        [docs/configuration.md](https://github.com/mail-monitor/mail-monitor/blob/main/docs/configuration.md).
        The simple options above fill in the account `default` and the route `default`.
        Secret files named here (`password_file`, `token_file`) are passed to the
        service with `LoadCredential`, never copied to the Nix store.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    (mkIf simpleAccount {
      services.mail-monitor.settings = {
        accounts.default = credentialSettings // {
          smtp = {
            host = cfg.smtp.host;
            inherit (cfg.smtp) port tls;
          };
          imap = simpleImapSettings;
        };
        accounts.recipient = mkIf (cfg.testRecipient != null) (
          credentialSettings
          // {
            address = cfg.testRecipient;
            imap = simpleImapSettings;
          }
        );
        routes = [
          {
            name = "default";
            from = "default";
            to = if cfg.testRecipient != null then "recipient" else "default";
            receive_timeout = cfg.receiveTimeout;
          }
        ];
      };
    })

    (mkIf cfg.ntfy.enable {
      services.mail-monitor.settings.alerts.ntfy = {
        inherit (cfg.ntfy) server topic;
      }
      // optionalAttrs (cfg.ntfy.tokenFile != null) { token_file = cfg.ntfy.tokenFile; };
    })

    (mkIf cfg.metrics.textfile.enable {
      services.mail-monitor.settings.metrics.textfile = "${metricsDirectory}/mail_monitor.prom";
      systemd.tmpfiles.rules = [ "d ${metricsDirectory} 0755 mail-monitor mail-monitor - -" ];
      services.prometheus.exporters.node = mkIf config.services.prometheus.exporters.node.enable {
        enabledCollectors = [ "textfile" ];
        extraFlags = [ "--collector.textfile.directory=${metricsDirectory}" ];
      };
    })

    {
      services.mail-monitor.settings.monitor.state_file = lib.mkDefault "/var/lib/${cfg.stateDirectory}/state.json";

      assertions = [
        {
          assertion = (cfg.settings.routes or [ ]) != [ ];
          message = "services.mail-monitor: no route to check; set smtp.host, credentials.username and credentials.passwordFile, or settings.routes.";
        }
        {
          assertion =
            !simpleAccount
            || (cfg.smtp.host != null && cfg.credentials.username != null && cfg.credentials.passwordFile != null);
          message = "services.mail-monitor: the simple setup needs smtp.host, credentials.username and credentials.passwordFile (imap.host defaults to smtp.host).";
        }
        {
          assertion = deadlineSeconds != null;
          message = "services.mail-monitor: settings.monitor.deadline: expected a duration like \"90s\", \"5m\", \"1h\" or a number of seconds, got ${builtins.toJSON cfg.settings.monitor.deadline}.";
        }
        {
          assertion = !cfg.ntfy.enable || cfg.ntfy.topic != null;
          message = "services.mail-monitor: ntfy.enable is set but ntfy.topic is not.";
        }
      ]
      ++ lib.mapAttrsToList (name: path: {
        assertion = !(isStorePath path);
        message = "services.mail-monitor: the secret for credential ${name} (${toString path}) is in the world-readable Nix store; point it to a file outside the store (e.g. a sops-nix or agenix secret).";
      }) secrets;

      users.users.mail-monitor = {
        isSystemUser = true;
        group = "mail-monitor";
        description = "mail-monitor service user";
      };
      users.groups.mail-monitor = { };

      systemd.services.mail-monitor = {
        description = "mail-monitor: end-to-end check of the mail server";
        documentation = [ "https://github.com/mail-monitor/mail-monitor/blob/main/docs/nixos.md" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        # Started by the timer only.
        restartIfChanged = false;

        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${lib.getExe cfg.package} run --config ${configFile}";
          # 0 OK, 1 WARNING, 2 CRITICAL are results; only 3 (the monitor could not do
          # its job) marks the unit failed.
          SuccessExitStatus = [
            1
            2
          ];
          # Above the run's own deadline, which it never exceeds. (An unreadable deadline
          # fails an assertion; 180 only keeps this evaluable until then.)
          TimeoutStartSec = builtins.ceil (if deadlineSeconds == null then 180 else deadlineSeconds) + 60;
          LoadCredential = lib.mapAttrsToList (name: path: "${name}:${path}") secrets;

          # A dedicated static user rather than DynamicUser: node_exporter must read the
          # metrics file, and /var/lib/private (DynamicUser's state) is not readable by it.
          User = "mail-monitor";
          Group = "mail-monitor";
          StateDirectory = cfg.stateDirectory;
          StateDirectoryMode = "0700";
          WorkingDirectory = "/var/lib/${cfg.stateDirectory}";
          ReadWritePaths = optional cfg.metrics.textfile.enable metricsDirectory;
          UMask = "0077";

          # Hardening: everything a network client does not need is off.
          CapabilityBoundingSet = "";
          AmbientCapabilities = "";
          DeviceAllow = "";
          DevicePolicy = "closed";
          KeyringMode = "private";
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          NoNewPrivileges = true;
          PrivateDevices = true;
          PrivateIPC = true;
          PrivateMounts = true;
          PrivateTmp = true;
          PrivateUsers = true;
          ProcSubset = "pid";
          ProtectClock = true;
          ProtectControlGroups = true;
          ProtectHome = true;
          ProtectHostname = true;
          ProtectKernelLogs = true;
          ProtectKernelModules = true;
          ProtectKernelTunables = true;
          ProtectProc = "invisible";
          ProtectSystem = "strict";
          RemoveIPC = true;
          # IMAP, SMTP, DNS (via resolv.conf) and ntfy need IP only; no AF_UNIX.
          RestrictAddressFamilies = [
            "AF_INET"
            "AF_INET6"
          ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [
            "@system-service"
            "~@privileged"
            "~@resources"
          ];
          SystemCallErrorNumber = "EPERM";
        };
      };

      systemd.timers.mail-monitor = {
        description = "Run mail-monitor periodically";
        wantedBy = [ "timers.target" ];
        # A oneshot unit is never started twice at once: a run still going when the
        # timer elapses again simply delays the next one, so runs never overlap.
        timerConfig =
          (
            if isTimeSpan cfg.interval then
              {
                OnBootSec = cfg.interval;
                OnUnitActiveSec = cfg.interval;
              }
            else
              { OnCalendar = cfg.interval; }
          )
          // {
            Persistent = true;
            RandomizedDelaySec = cfg.randomizedDelay;
            AccuracySec = "1s";
          };
      };
    }
  ]);

  meta.maintainers = [ ];
}
