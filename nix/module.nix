{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.mail-monitor;
  nodeExporter = config.services.prometheus.exporters.node;
  settingsFormat = pkgs.formats.toml { };

  inherit (lib)
    literalExpression
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    optionalAttrs
    types
    ;

  defaultUser = "mail-monitor";
  defaultTextfileDirectory = "/var/lib/prometheus-node-exporter-text-files";
  textfileFlag = "--collector.textfile.directory";

  credentialsPath = name: "$CREDENTIALS_DIRECTORY/${name}";

  # A file given as a string or as a Nix path, as a string. toString, not
  # interpolation: "${./secret}" would copy the secret into the world-readable store.
  pathString = path: if path == null then null else toString path;
  secretType = types.nullOr (types.either types.str types.path);

  isStorePath = path: lib.hasPrefix builtins.storeDir path;
  withoutNulls = lib.filterAttrs (_: value: value != null);

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

  # Seconds in a duration as the program reads it ("90s", "4.5m", "250ms", "1d", 300);
  # null for anything it would refuse.
  durationSeconds =
    value:
    if builtins.isInt value || builtins.isFloat value then
      (if value < 0 then null else value)
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

  # Whole seconds in a systemd time span ("5min", "1h 30m", "90"; systemd.time(7)), or
  # null for anything else ("1.5h" is a span too, but never an exact calendar).
  spanSeconds =
    interval:
    let
      unitSeconds = {
        "" = 1;
        s = 1;
        sec = 1;
        secs = 1;
        second = 1;
        seconds = 1;
        m = 60;
        min = 60;
        mins = 60;
        minute = 60;
        minutes = 60;
        h = 3600;
        hr = 3600;
        hrs = 3600;
        hour = 3600;
        hours = 3600;
        d = 86400;
        day = 86400;
        days = 86400;
        w = 604800;
        week = 604800;
        weeks = 604800;
      };
      pieces = builtins.split "([0-9]+)[[:space:]]*([a-z]*)" interval;
      separators = lib.filter builtins.isString pieces;
      terms = lib.filter builtins.isList pieces;
      termSeconds =
        term:
        let
          unit = builtins.elemAt term 1;
        in
        if unitSeconds ? ${unit} then lib.toInt (builtins.elemAt term 0) * unitSeconds.${unit} else null;
      seconds = map termSeconds terms;
    in
    if
      terms == [ ]
      || lib.any (separator: builtins.match "[[:space:]]*" separator == null) separators
      || lib.elem null seconds
    then
      null
    else
      lib.foldl' builtins.add 0 seconds;

  # The calendar expression that fires exactly every `seconds`, aligned to the clock,
  # where one exists (5min -> *:0/5, 2h -> 0/2:00); null otherwise (7min, 90min, 2d).
  exactCalendar =
    seconds:
    let
      divides = n: total: n > 0 && lib.mod total n == 0;
    in
    if seconds == null then
      null
    else if seconds < 60 && divides seconds 60 then
      "*:*:0/${toString seconds}"
    else if divides 60 seconds && seconds < 3600 && divides (seconds / 60) 60 then
      "*:0/${toString (seconds / 60)}"
    else if divides 3600 seconds && seconds < 86400 && divides (seconds / 3600) 24 then
      "0/${toString (seconds / 3600)}:00"
    else if seconds == 86400 then
      "daily"
    else if seconds == 604800 then
      "weekly"
    else
      null;

  # A time span starts with a number ("5min", "1.5h", "90"); a calendar expression does
  # not ("*:0/5", "hourly", "Mon 04:00").
  intervalIsSpan = builtins.match "[[:space:]]*[0-9.]+[[:space:]]*[a-z]*([[:space:]]+[0-9.]+[[:space:]]*[a-z]*)*[[:space:]]*" cfg.interval != null;
  intervalCalendar = if intervalIsSpan then exactCalendar (spanSeconds cfg.interval) else cfg.interval;

  # StateDirectory= takes a name below /var/lib; the existing module's default is the
  # absolute "/var/lib/mail-monitor", so both forms are accepted.
  stateDirectoryName = lib.removeSuffix "/" (lib.removePrefix "/var/lib/" cfg.stateDirectory);
  stateDirectoryIsValid =
    builtins.match "[A-Za-z0-9_.@+-]+(/[A-Za-z0-9_.@+-]+)*" stateDirectoryName != null
    && !(lib.any (part: part == "." || part == "..") (lib.splitString "/" stateDirectoryName));
  statePath = "/var/lib/${stateDirectoryName}";

  receiveTimeout =
    if builtins.isInt cfg.receiveTimeout then "${toString cfg.receiveTimeout}s" else cfg.receiveTimeout;

  simpleAccount = cfg.smtp.host != null || cfg.imap.host != null;
  simpleImapSettings = withoutNulls {
    host = if cfg.imap.host != null then cfg.imap.host else cfg.smtp.host;
    inherit (cfg.imap) port tls;
    extra_folders = cfg.imap.extraFolders;
  };
  credentialSettings = withoutNulls {
    address = cfg.credentials.username;
    username = cfg.credentials.username;
    password_file = pathString cfg.credentials.passwordFile;
  };

  isCredentialReference = path: lib.hasPrefix "$CREDENTIALS_DIRECTORY" path;

  # Where in the settings a secret file may be named, and the credential name
  # LoadCredential gives it there.
  secretSlots =
    lib.concatLists (
      lib.mapAttrsToList (name: _: [
        {
          credential = "password-${name}";
          at = [ "accounts" name "password_file" ];
        }
        {
          credential = "oauth2-${name}-smtp";
          at = [ "accounts" name "smtp" "oauth2_token_file" ];
        }
        {
          credential = "oauth2-${name}-imap";
          at = [ "accounts" name "imap" "oauth2_token_file" ];
        }
      ]) (cfg.settings.accounts or { })
    )
    ++ [
      {
        credential = "ntfy-token";
        at = [ "alerts" "ntfy" "token_file" ];
      }
      {
        credential = "ntfy-password";
        at = [ "alerts" "ntfy" "password_file" ];
      }
      {
        credential = "heartbeat-token";
        at = [ "heartbeat" "token_file" ];
      }
    ];

  # The secret files the settings name, keyed by credential name, with where they sit.
  # One already under $CREDENTIALS_DIRECTORY was loaded by the host itself.
  settingsSecrets = lib.listToAttrs (
    lib.concatMap (
      slot:
      let
        path = pathString (lib.attrByPath slot.at null cfg.settings);
      in
      lib.optional (path != null && !(isCredentialReference path)) (
        lib.nameValuePair slot.credential {
          inherit path;
          inherit (slot) at;
        }
      )
    ) secretSlots
  );

  # With configFile the file names its own secrets; the module only loads the file.
  secrets =
    if cfg.configFile != null then
      { "config.toml" = toString cfg.configFile; }
    else
      lib.mapAttrs (_: secret: secret.path) settingsSecrets;

  # The settings as written to the store: secret paths replaced by credential paths.
  renderedSettings = lib.foldl' (
    settings: name: lib.recursiveUpdate settings (lib.setAttrByPath settingsSecrets.${name}.at (credentialsPath name))
  ) cfg.settings (builtins.attrNames settingsSecrets);

  # CA files the settings name: not secrets, read by the service user where they are.
  caFiles =
    if cfg.configFile != null then
      [ ]
    else
      lib.unique (
        lib.filter (path: path != null) (
          map pathString (
            lib.concatLists (
              lib.mapAttrsToList (_: account: [
                (account.smtp.ca_file or null)
                (account.imap.ca_file or null)
              ]) (cfg.settings.accounts or { })
            )
            ++ [
              (cfg.settings.alerts.ntfy.ca_file or null)
              (cfg.settings.heartbeat.ca_file or null)
            ]
            ++ map (domain: domain.ca_file or null) (cfg.settings.domains or [ ])
          )
        )
      );
  underAny = directories: path: lib.any (directory: lib.hasPrefix "${directory}/" path) directories;
  # ProtectHome= hides these; ProtectSystem=strict leaves everything else (/etc, /var/lib,
  # /run/secrets, the store) visible and read-only.
  homeDirectories = [
    "/home"
    "/root"
    "/run/user"
  ];
  # PrivateTmp= gives the service its own empty /tmp and /var/tmp.
  temporaryDirectories = [
    "/tmp"
    "/var/tmp"
  ];
  caFilesInHomes = lib.filter (underAny homeDirectories) caFiles;
  caFilesInTemporaryDirectories = lib.filter (underAny temporaryDirectories) caFiles;

  # systemd expands %d to the service's credentials directory.
  configArgument =
    if cfg.configFile != null then
      "%d/config.toml"
    else
      settingsFormat.generate "mail-monitor.toml" renderedSettings;

  deadlineSeconds =
    if cfg.configFile != null then 180 else durationSeconds (cfg.settings.monitor.deadline or "3m");

  # The metrics file the program writes, however it was configured.
  metricsFile =
    if cfg.configFile != null then
      (if cfg.metrics.textfile.enable then "${cfg.metrics.textfile.directory}/mail_monitor.prom" else null)
    else
      pathString (cfg.settings.metrics.textfile or null);
  metricsDirectory = if metricsFile == null then null else dirOf metricsFile;

  # [postfix_queue] enable = true in the settings: the service then needs what postqueue
  # needs (docs/queue.md). A configFile is opaque here; its host grants that itself.
  queueCheck = cfg.configFile == null && ((cfg.settings.postfix_queue or { }).enable or false) == true;

  # The textfile directory node_exporter is already told about in its extraFlags, if any.
  # Read from extraFlags only: the module itself sets enabledCollectors, and reading an
  # option while defining it would recurse.
  userTextfileDirectories = map (lib.removePrefix "${textfileFlag}=") (
    lib.filter (lib.hasPrefix "${textfileFlag}=") nodeExporter.extraFlags
  );
  nodeExporterTextfileFlags = lib.filter (lib.hasPrefix textfileFlag) (
    map (collector: "--collector.${collector}") nodeExporter.enabledCollectors ++ nodeExporter.extraFlags
  );
in
{
  options.services.mail-monitor = {
    enable = mkEnableOption "mail-monitor, an end-to-end monitor for your own mail server";

    package = mkPackageOption pkgs "mail-monitor" { };

    user = mkOption {
      type = types.str;
      default = defaultUser;
      description = ''
        User the service runs as. The default user is created; another one must exist.
        It owns the state directory and the metrics directory.
      '';
    };

    group = mkOption {
      type = types.str;
      default = defaultUser;
      description = "Group the service runs as; created when left at its default.";
    };

    interval = mkOption {
      type = types.str;
      default = "5min";
      example = "*:0/10";
      description = ''
        How often to check: a systemd time span or a calendar expression
        ({manpage}`systemd.time(7)`). A span that divides the hour or the day evenly
        (`"1min"`, `"5min"`, `"15min"`, `"2h"`, `"1d"`) becomes the matching calendar
        expression (`*:0/5`, …) with `Persistent=true`, so a run missed while the machine
        was off happens right after boot. Any other span (`"7min"`, `"90min"`) runs that
        long after boot and after each run (`OnBootSec`, `OnUnitActiveSec`), where
        systemd has nothing to catch up. A calendar expression such as `"*:0/10"` or
        `"hourly"` is used as it is, with `Persistent=true`.
      '';
    };

    randomizedDelay = mkOption {
      type = types.str;
      default = "30s";
      example = "2min";
      description = ''
        Delay added to each start (`RandomizedDelaySec` with `FixedRandomDelay=true`): each
        host gets its own fixed offset, so many hosts do not probe at once.
      '';
    };

    smtp = endpointOptions {
      server = "Submission server of the simple single-account setup. Use {option}`settings` for more accounts.";
      port = 587;
      tls = "starttls";
      tlsDescription = "`starttls` (port 587), `implicit` (port 465) or `none` (plain text).";
    };

    imap =
      endpointOptions {
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
        type = secretType;
        default = null;
        example = "/run/secrets/mail-monitor";
        description = ''
          File holding the password, read by systemd and passed with `LoadCredential`,
          so it may stay `0400 root`. A string or a path; it must not be in the Nix
          store (a path inside a flake is). Works with sops-nix and agenix paths.
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
      type = types.either types.ints.unsigned types.str;
      default = "60s";
      example = 120;
      description = ''
        How long to wait for the test mail before the route counts as failed: seconds
        (`60`) or a duration (`"90s"`, `"2m"`).
      '';
    };

    ntfy = {
      enable = mkOption {
        type = types.bool;
        default = cfg.ntfy.topic != null;
        defaultText = literalExpression "config.services.mail-monitor.ntfy.topic != null";
        description = "Whether to push ntfy alerts on state changes; on as soon as a topic is set.";
      };
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
        type = secretType;
        default = null;
        example = "/run/secrets/ntfy-token";
        description = "File holding an ntfy access token (passed with `LoadCredential`).";
      };
    };

    heartbeat.url = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://hc-ping.com/eb095278-f28d-448d-87fb-7b75c171a6aa";
      description = ''
        Ping URL of a dead man's switch (healthchecks.io, or any service that takes
        `URL/start` and `URL/<exit code>`), rendered as `settings.heartbeat.url`: it is
        told when each run starts and ends, and alerts you when runs stop. The URL lands
        in the world-readable Nix store, like the ntfy topic: anyone on the host can read
        it and ping in your name, which a ping URL (a capability URL) is meant to prevent.
        Where that matters, put `[heartbeat]` into a {option}`configFile` kept outside
        the store. For a `url_template`, `method` or `token_file`, use
        `settings.heartbeat`; `token_file` is passed with `LoadCredential`.
      '';
    };

    stateDirectory = mkOption {
      type = types.str;
      default = "mail-monitor";
      example = "/var/lib/mail-monitor";
      description = ''
        Directory for the state file, as a name below {file}`/var/lib` or as an absolute
        path below it (systemd `StateDirectory=`); anything else fails an assertion.
      '';
    };

    metrics.textfile = {
      enable = mkEnableOption "Prometheus metrics for node_exporter's textfile collector";
      directory = mkOption {
        type = types.str;
        default = if userTextfileDirectories != [ ] then lib.head userTextfileDirectories else defaultTextfileDirectory;
        defaultText = lib.literalMD ''
          the directory of a `${textfileFlag}=` flag in
          {option}`services.prometheus.exporters.node.extraFlags`, else `"${defaultTextfileDirectory}"`
        '';
        description = ''
          Directory for {file}`mail_monitor.prom`, created and owned by {option}`user`.
          When {option}`services.prometheus.exporters.node.enable` is set and its
          `extraFlags` name no textfile directory, the node exporter is pointed at this one.
        '';
      };
    };

    configFile = mkOption {
      type = types.nullOr (types.either types.str types.path);
      default = null;
      example = "/run/secrets-rendered/mail-monitor.toml";
      description = ''
        Use this TOML file instead of generating one from {option}`settings` and the
        simple options, which are then ignored. It is passed with `LoadCredential`, so it
        may be a `0400 root` file such as a sops-nix template. Secrets named in it must be
        readable by the service, or loaded with
        `systemd.services.mail-monitor.serviceConfig.LoadCredential` and referred to as
        `$CREDENTIALS_DIRECTORY/NAME`. With {option}`metrics.textfile.enable` it must
        set `metrics.textfile` to {file}`mail_monitor.prom` in
        {option}`metrics.textfile.directory`.
      '';
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
        Secret files named here (`password_file`, `token_file`, `oauth2_token_file`) are
        passed to the service with `LoadCredential`, never copied to the Nix store. A
        `ca_file` under {file}`/home`, {file}`/root` or {file}`/run/user` is bind-mounted
        into the service's view, where `ProtectHome` would hide it.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    (mkIf simpleAccount {
      services.mail-monitor.settings = {
        accounts.default = credentialSettings // {
          smtp = withoutNulls {
            inherit (cfg.smtp) host port tls;
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
            receive_timeout = receiveTimeout;
          }
        ];
      };
    })

    (mkIf cfg.ntfy.enable {
      services.mail-monitor.settings.alerts.ntfy = withoutNulls {
        inherit (cfg.ntfy) server topic;
        token_file = pathString cfg.ntfy.tokenFile;
      };
    })

    (mkIf (cfg.heartbeat.url != null) {
      services.mail-monitor.settings.heartbeat.url = cfg.heartbeat.url;
    })

    (mkIf cfg.metrics.textfile.enable {
      services.mail-monitor.settings.metrics.textfile = mkDefault "${cfg.metrics.textfile.directory}/mail_monitor.prom";
      # The values are conditional, not the node submodule: `node = mkIf node.enable …`
      # would need node.enable to decide node's own definitions (infinite recursion).
      # The collector is on by default; only its directory is passed, and not when the
      # user already passes one (node_exporter refuses a repeated flag).
      services.prometheus.exporters.node.enabledCollectors =
        mkIf (nodeExporter.enable && metricsDirectory != null && userTextfileDirectories == [ ])
          [ "textfile.directory=${metricsDirectory}" ];
    })

    (mkIf (metricsDirectory != null) {
      systemd.tmpfiles.rules = [ "d ${metricsDirectory} 0755 ${cfg.user} ${cfg.group} - -" ];
    })

    {
      services.mail-monitor.settings.monitor.state_file = mkDefault "${statePath}/state.json";

      assertions = [
        {
          assertion = cfg.configFile != null || (cfg.settings.routes or [ ]) != [ ];
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
          message = "services.mail-monitor: settings.monitor.deadline: expected a duration like \"90s\", \"5m\", \"1h\" or a number of seconds, got ${builtins.toJSON (cfg.settings.monitor.deadline or null)}.";
        }
        {
          assertion = durationSeconds receiveTimeout != null;
          message = "services.mail-monitor: receiveTimeout: expected seconds or a duration like \"90s\", \"2m\", got ${builtins.toJSON cfg.receiveTimeout}.";
        }
        {
          assertion = !cfg.ntfy.enable || (cfg.settings.alerts.ntfy or { }) ? topic;
          message = "services.mail-monitor: ntfy.enable is set but ntfy.topic is not.";
        }
        {
          assertion = stateDirectoryIsValid;
          message = "services.mail-monitor: stateDirectory: expected a name below /var/lib (\"mail-monitor\") or a path below it (\"/var/lib/mail-monitor\"), got ${builtins.toJSON cfg.stateDirectory}.";
        }
        {
          assertion = !(nodeExporter.enable && lib.length nodeExporterTextfileFlags > 1);
          message = "services.mail-monitor: services.prometheus.exporters.node passes ${textfileFlag} more than once (${lib.concatStringsSep ", " nodeExporterTextfileFlags}), which node_exporter refuses; pass it once, in extraFlags, and mail-monitor writes to that directory.";
        }
      ]
      ++ map (path: {
        assertion = false;
        message = "services.mail-monitor: the ca_file ${path} is in ${
          lib.findFirst (directory: lib.hasPrefix "${directory}/" path) "" temporaryDirectories
        }, which the service does not see (PrivateTmp gives it its own); put it under /etc or /var/lib.";
      }) caFilesInTemporaryDirectories
      ++ lib.mapAttrsToList (name: path: {
        assertion = !(isStorePath path);
        message = "services.mail-monitor: the secret for credential ${name} (${path}) is in the world-readable Nix store; point it to a file outside the store (e.g. a sops-nix or agenix secret).";
      }) (removeAttrs secrets [ "config.toml" ]);

      warnings =
        optional (cfg.configFile != null && (simpleAccount || cfg.ntfy.enable))
          "services.mail-monitor: configFile is set, so smtp, imap, credentials and ntfy are ignored; configure them in that file."
        ++
          optional
            (
              cfg.metrics.textfile.enable
              && nodeExporter.enable
              && metricsDirectory != null
              && userTextfileDirectories != [ ]
              && !(lib.elem metricsDirectory userTextfileDirectories)
            )
            "services.mail-monitor: metrics go to ${metricsDirectory}, but node_exporter reads ${lib.head userTextfileDirectories} (its extraFlags); it will not see them.";

      users.users = optionalAttrs (cfg.user == defaultUser) {
        ${defaultUser} = {
          isSystemUser = true;
          inherit (cfg) group;
          description = "mail-monitor service user";
        };
      };
      users.groups = optionalAttrs (cfg.group == defaultUser) { ${defaultUser} = { }; };

      systemd.services.mail-monitor = {
        description = "mail-monitor: end-to-end check of the mail server";
        documentation = [ "https://github.com/mail-monitor/mail-monitor/blob/main/docs/nixos.md" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        # Started by the timer only.
        restartIfChanged = false;
        # The queue check runs `postqueue` from Postfix's package, found on PATH, not the
        # set-gid wrapper in /run/wrappers/bin: set-gid does nothing under NoNewPrivileges,
        # and the service holds the group itself (SupplementaryGroups below; docs/queue.md).
        path = optional queueCheck config.services.postfix.package;

        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${lib.getExe cfg.package} run --config ${configArgument}";
          # 0 OK, 1 WARNING, 2 CRITICAL are results; only 3 (the monitor could not do
          # its job) marks the unit failed.
          SuccessExitStatus = [
            1
            2
          ];
          # Above the run's own deadline, which it never exceeds. (An unreadable deadline
          # fails an assertion; 180 only keeps this evaluable until then.) A default, for
          # a configFile with a longer deadline than the module can see.
          TimeoutStartSec = mkDefault (builtins.ceil (if deadlineSeconds == null then 180 else deadlineSeconds) + 60);
          LoadCredential = lib.mapAttrsToList (name: path: "${name}:${path}") secrets;

          # A static user rather than DynamicUser: node_exporter must read the metrics
          # file, and /var/lib/private (DynamicUser's state) is closed to it.
          User = cfg.user;
          Group = cfg.group;
          StateDirectory = stateDirectoryName;
          StateDirectoryMode = "0700";
          WorkingDirectory = statePath;
          ReadWritePaths = optional (metricsDirectory != null) metricsDirectory;
          # "-": a missing file is the program's to report (exit 3, naming the key), not
          # a failure to set up the service's mount namespace.
          BindReadOnlyPaths = mkIf (caFilesInHomes != [ ]) (map (path: "-${path}") caFilesInHomes);
          # The queue check: postqueue asks Postfix's showq service over the UNIX socket
          # $queue_directory/public/showq, in a directory only the set-gid group may enter.
          # The service holds that group itself, as set-gid does nothing under NoNewPrivileges.
          SupplementaryGroups = optional queueCheck config.services.postfix.setgidGroup;
        }
        # Hardening, as nixpkgs' prometheus exporters have it, each a default that a
        # host may relax (`serviceConfig.ProtectHome = false;` without mkForce).
        // lib.mapAttrs (_: mkDefault) {
          UMask = "0077";
          CapabilityBoundingSet = "";
          DeviceAllow = "";
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          NoNewPrivileges = true;
          PrivateDevices = true;
          PrivateTmp = true;
          ProtectClock = true;
          ProtectControlGroups = true;
          # Empty home directories rather than none, when a CA file under one is bound
          # in: a bind mount needs a directory to land in (systemd.exec(5), ProtectHome=).
          ProtectHome = if caFilesInHomes != [ ] then "tmpfs" else true;
          ProtectHostname = true;
          ProtectKernelLogs = true;
          ProtectKernelModules = true;
          ProtectKernelTunables = true;
          ProtectSystem = "strict";
          RemoveIPC = true;
          # IMAP, SMTP, DNS (via resolv.conf) and ntfy need IP only. The exporters have
          # the same list; unlike them, AF_UNIX is needed only for the queue check.
          RestrictAddressFamilies = [
            "AF_INET"
            "AF_INET6"
          ]
          # Deviation for the queue check only: showq is a UNIX socket.
          ++ optional queueCheck "AF_UNIX";
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          SystemCallArchitectures = "native";

          # Beyond the exporters: a short-lived client that runs no other program needs
          # none of the following, and together they bring the exposure from 2.x to 1.1.
          # No /dev/* at all, not even the pseudo devices PrivateDevices leaves.
          DevicePolicy = "closed";
          # No access to the user's kernel keyring; secrets come as credentials.
          KeyringMode = "private";
          # No System V / POSIX IPC objects shared with other services.
          PrivateIPC = true;
          # Mounts it sees are its own; none propagate back to the host.
          PrivateMounts = true;
          # The service user maps to itself only: no other user exists in its view.
          # Deviation for the queue check only: in a private user namespace the postdrop
          # group is not mapped, so the service would lose it.
          PrivateUsers = !queueCheck;
          # Only its own processes in /proc, and no /proc/sys and the like.
          ProcSubset = "pid";
          ProtectProc = "invisible";
          # The exporters leave the syscall filter to each exporter; Python's stdlib
          # networking, TLS and file writes fit in @system-service, without privileged
          # or resource-limit calls.
          SystemCallFilter = [
            "@system-service"
            "~@privileged"
            "~@resources"
          ];
          # A filtered call fails with EPERM, which Python reports, instead of killing the run.
          SystemCallErrorNumber = "EPERM";
        };
      };

      systemd.timers.mail-monitor = {
        description = "Run mail-monitor periodically";
        wantedBy = [ "timers.target" ];
        # A oneshot unit is never started twice at once: while a run is still going, the
        # timer elapsing again only queues the start behind it, so runs never overlap.
        timerConfig =
          (
            if intervalCalendar != null then
              {
                OnCalendar = intervalCalendar;
                # Only OnCalendar timers catch up (systemd.timer(5)): a run missed while
                # the machine was off starts right after boot.
                Persistent = true;
              }
            else
              {
                OnBootSec = cfg.interval;
                OnUnitActiveSec = cfg.interval;
              }
          )
          // {
            RandomizedDelaySec = cfg.randomizedDelay;
            # The same offset for this host on every run, so the interval stays even.
            FixedRandomDelay = true;
            AccuracySec = "1s";
          };
      };
    }
  ]);

  meta.maintainers = [ ];
}
