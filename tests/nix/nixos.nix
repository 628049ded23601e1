# Stand-ins for the parts of NixOS that nix/module.nix (and nix/tests/vm.nix) touch, with
# the option shapes nixpkgs gives them, so that the module is evaluated as on a real host:
#
# - services.prometheus.exporters is ONE submodule option, `node` a submodule option
#   inside it with the common exporter options and node's enabledCollectors /
#   disabledCollectors (nixos/modules/services/monitoring/prometheus/exporters.nix,
#   exporters/node.nix); an enabled node exporter gets its service, whose ExecStart
#   passes "--collector.X" for each enabled collector and then the extraFlags.
# - systemd.services / systemd.timers: submodules without a freeform part, their
#   serviceConfig / timerConfig attrsOf the "systemd option" type: lists from several
#   definitions are concatenated, other values must be equal (nixos/lib/systemd-unit-options.nix).
# - users.users / users.groups with the assertions users-groups.nix makes about them.
# - assertions and warnings (nixos/modules/misc/assertions.nix).
#
# Written from what those files say; only the options used here are declared, so a
# misspelt or unknown option is an error, as on NixOS.
{ lib, pkgs }:

let
  inherit (lib) mkOption types;

  option =
    type: default:
    mkOption {
      inherit type default;
    };

  unitOption = lib.mkOptionType {
    name = "systemd option";
    check = value: lib.any (check: check value) [
      builtins.isBool
      builtins.isInt
      builtins.isFloat
      builtins.isString
      builtins.isPath
      builtins.isList
      lib.isDerivation
    ];
    merge =
      loc: defs:
      if builtins.isList (lib.head defs).value then
        lib.concatMap (
          def:
          if builtins.isList def.value then
            def.value
          else
            throw "The definitions for systemd unit options should be either all lists or all non-lists, but ${lib.showOption loc} mixes them."
        ) defs
      else
        lib.mergeEqualOption loc defs;
  };
  unitSection = option (types.attrsOf unitOption) { };
  unitNames = option (types.listOf types.str) [ ];

  serviceTypes = [
    "exec"
    "simple"
    "forking"
    "oneshot"
    "dbus"
    "notify"
    "notify-reload"
    "idle"
  ];

  commonUnitOptions = {
    description = option types.singleLineStr "";
    documentation = option (types.listOf types.str) [ ];
    wants = unitNames;
    after = unitNames;
    before = unitNames;
    requires = unitNames;
    wantedBy = unitNames;
    requiredBy = unitNames;
    enable = option types.bool true;
    unitConfig = unitSection;
  };

  serviceModule = {
    options = commonUnitOptions // {
      serviceConfig = mkOption {
        type = types.addCheck (types.attrsOf unitOption) (
          attrs: !(attrs ? Type) || lib.elem (attrs.Type.content or attrs.Type) serviceTypes
        );
        default = { };
      };
      environment = option (types.attrsOf (types.nullOr types.str)) { };
      path = option (types.listOf types.package) [ ];
      script = option types.lines "";
      restartIfChanged = option types.bool true;
      startAt = option (types.either types.str (types.listOf types.str)) [ ];
    };
  };

  timerModule = {
    options = commonUnitOptions // {
      timerConfig = unitSection;
    };
  };

  userModule =
    { name, config, ... }:
    {
      # users-groups.nix: a normal user is in "users" unless told otherwise.
      config.group = lib.mkIf config.isNormalUser (lib.mkDefault "users");
      options = {
        name = option types.str name;
        description = option types.str "";
        isSystemUser = option types.bool false;
        isNormalUser = option types.bool false;
        group = option types.str "";
        extraGroups = option (types.listOf types.str) [ ];
        home = option types.path "/var/empty";
        createHome = option types.bool false;
        uid = option (types.nullOr types.int) null;
        password = option (types.nullOr types.str) null;
      };
    };

  groupModule =
    { name, ... }:
    {
      options = {
        name = option types.str name;
        gid = option (types.nullOr types.int) null;
        members = option (types.listOf types.str) [ ];
      };
    };

  # mkExporterOpts of exporters.nix, plus node's own options.
  nodeExporterModule = {
    options = {
      enable = lib.mkEnableOption "the prometheus node exporter";
      port = option types.port 9100;
      listenAddress = option types.str "0.0.0.0";
      extraFlags = option (types.listOf types.str) [ ];
      openFirewall = option types.bool false;
      firewallFilter = option (types.nullOr types.str) null;
      user = option types.str "node-exporter";
      group = option types.str "node-exporter";
      enabledCollectors = option (types.listOf types.str) [ ];
      disabledCollectors = option (types.listOf types.str) [ ];
    };
  };

  # exporters.nix imports misc/assertions.nix into the exporters submodule too.
  assertionOptions = {
    assertions = option (types.listOf types.unspecified) [ ];
    warnings = option (types.listOf types.str) [ ];
  };
in
{
  config,
  ...
}:
let
  node = config.services.prometheus.exporters.node;
in
{
  options = assertionOptions // {
    users.users = option (types.attrsOf (types.submodule userModule)) { };
    users.groups = option (types.attrsOf (types.submodule groupModule)) { };

    systemd.services = option (types.attrsOf (types.submodule serviceModule)) { };
    systemd.timers = option (types.attrsOf (types.submodule timerModule)) { };
    systemd.tmpfiles.rules = option (types.listOf types.str) [ ];

    services.prometheus.ruleFiles = option (types.listOf types.path) [ ];
    services.prometheus.exporters = mkOption {
      type = types.submodule {
        options = assertionOptions // {
          node = mkOption {
            type = types.submodule nodeExporterModule;
            default = { };
            internal = true;
          };
        };
      };
      default = { };
    };

    meta.maintainers = option (types.listOf types.raw) [ ];

    # What nix/tests/vm.nix sets besides the module; not touched by the module.
    networking.domain = option (types.nullOr types.str) null;
    services.postfix = {
      enable = option types.bool false;
      # postfix.nix: `package = lib.mkPackageOption pkgs "postfix" { };`, and the group
      # postqueue / postdrop are set-gid to.
      package = option types.package pkgs.postfix;
      setgidGroup = option types.str "postdrop";
      settings.main = option (types.attrsOf (types.either types.str (types.listOf types.str))) { };
    };
    services.dovecot2 = {
      enable = option types.bool false;
      enableImap = option types.bool true;
      mailLocation = option types.str "maildir:/var/spool/mail/%u";
      extraConfig = option types.lines "";
    };
  };

  config = lib.mkMerge [
    {
      assertions =
        lib.concatLists (
          lib.mapAttrsToList (name: user: [
            {
              assertion = user.isSystemUser != user.isNormalUser;
              message = "Exactly one of users.users.${name}.isSystemUser and users.users.${name}.isNormalUser must be set.";
            }
            {
              assertion = user.group != "";
              message = "users.users.${name}.group is unset.";
            }
          ]) config.users.users
        )
        ++ config.services.prometheus.exporters.assertions;
      warnings = config.services.prometheus.exporters.warnings;
    }
    (lib.mkIf node.enable {
      users.users.${node.user} = lib.mkIf (node.user == "node-exporter") {
        isSystemUser = true;
        inherit (node) group;
      };
      users.groups = lib.mkIf (node.group == "node-exporter") { node-exporter = { }; };
      systemd.services.prometheus-node-exporter = {
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        serviceConfig = {
          DynamicUser = false;
          User = node.user;
          Group = node.group;
          ExecStart = lib.concatStringsSep " " (
            [ "${pkgs.prometheus-node-exporter}/bin/node_exporter" ]
            ++ map (collector: "--collector.${collector}") node.enabledCollectors
            ++ map (collector: "--no-collector.${collector}") node.disabledCollectors
            ++ [ "--web.listen-address ${node.listenAddress}:${toString node.port}" ]
            ++ node.extraFlags
          );
        };
      };
    })
  ];
}
