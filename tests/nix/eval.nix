# Evaluates nix/module.nix with the real lib.evalModules and returns what the tests check.
#
# Only what lies outside nixpkgs' lib is stood in for, as small and honest as possible:
# the NixOS options the module sets (declared with loose types), pkgs.formats.toml (its
# real type; `generate` writes JSON, which the test turns into TOML like nixpkgs'
# json2toml does) and the package (a derivation-shaped attrset with meta.mainProgram).
{
  libPath,
  configJson,
}:

let
  lib = import (libPath + "/lib");
  inherit (lib) mkOption types;

  tomlValue =
    with types;
    nullOr (oneOf [
      bool
      int
      float
      str
      path
      (attrsOf tomlValue)
      (listOf tomlValue)
    ])
    // {
      description = "TOML value";
    };

  pkgs = {
    formats.toml = _: {
      type = types.attrsOf tomlValue;
      generate = name: value: builtins.toFile name (builtins.toJSON value);
    };
    mail-monitor = {
      type = "derivation";
      name = "mail-monitor-0.1.0";
      outPath = "${builtins.storeDir}/00000000000000000000000000000000-mail-monitor-0.1.0";
      meta.mainProgram = "mail-monitor";
    };
  };

  loose = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };
  unitsOf =
    section:
    mkOption {
      type = types.attrsOf (
        types.submodule {
          freeformType = types.attrsOf types.anything;
          options.${section} = loose;
        }
      );
      default = { };
    };

  nixosStandIns = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      users.users = loose;
      users.groups = loose;
      systemd.services = unitsOf "serviceConfig";
      systemd.timers = unitsOf "timerConfig";
      systemd.tmpfiles.rules = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      services.prometheus.exporters.node = {
        enable = mkOption {
          type = types.bool;
          default = false;
        };
        enabledCollectors = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        extraFlags = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
      };
      meta.maintainers = mkOption {
        type = types.listOf types.anything;
        default = [ ];
      };
    };
  };

  evaluated = lib.evalModules {
    specialArgs = { inherit pkgs; };
    modules = [
      nixosStandIns
      ../../nix/module.nix
      (builtins.fromJSON configJson)
    ];
  };
  config = evaluated.config;

  # As nixpkgs' systemd-lib renders a section: lists as repeated keys, booleans as true/false.
  renderValue = value: if builtins.isBool value then lib.boolToString value else toString value;
  renderSection =
    name: attrs:
    "[${name}]\n"
    + lib.concatStrings (
      lib.mapAttrsToList (
        key: value:
        lib.concatMapStrings (item: "${key}=${renderValue item}\n") (
          if builtins.isList value then value else [ value ]
        )
      ) (lib.filterAttrs (_: value: value != null && value != [ ]) attrs)
    );

  service = config.systemd.services.mail-monitor or null;
  timer = config.systemd.timers.mail-monitor or null;
  unitSection =
    unit:
    {
      Description = unit.description;
    }
    // lib.optionalAttrs (unit ? documentation) { Documentation = unit.documentation; }
    // lib.optionalAttrs (unit ? wants) { Wants = unit.wants; }
    // lib.optionalAttrs (unit ? after) { After = unit.after; };
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
}
// lib.optionalAttrs (service != null) {
  serviceConfig = service.serviceConfig;
  serviceUnit = renderSection "Unit" (unitSection service) + "\n" + renderSection "Service" service.serviceConfig;
  timerConfig = timer.timerConfig;
  timerUnit =
    renderSection "Unit" (unitSection timer)
    + "\n"
    + renderSection "Timer" timer.timerConfig
    + "\n"
    + renderSection "Install" { WantedBy = timer.wantedBy; };
  configFile =
    let
      execStart = service.serviceConfig.ExecStart;
    in
    lib.last (lib.splitString " " execStart);
  settings = config.services.mail-monitor.settings;
  tmpfiles = config.systemd.tmpfiles.rules;
  nodeExporter = config.services.prometheus.exporters.node;
  users = builtins.attrNames config.users.users;
}
