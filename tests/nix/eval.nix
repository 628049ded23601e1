# Evaluates the flake's NixOS module with nixpkgs' real lib.evalModules, against the
# stand-ins of nixos.nix (NixOS options) and pkgs.nix (packages), and returns what the
# tests check. As on NixOS, failed assertions stop everything else: then only they and
# the warnings are returned (top-level.nix checks them before building the system), and
# the settings, which `nix eval …config.services.mail-monitor.settings` must still show.
{
  libPath,
  # The NixOS configuration to evaluate, as JSON, or as a file (for Nix paths); or
  configJson ? "{}",
  configModule ? null,
  # evaluate nix/tests/vm.nix's machine instead.
  vmTest ? false,
  system ? "x86_64-linux",
}:

let
  lib = import (libPath + "/lib");
  pkgs = import ./pkgs.nix { inherit lib system; };

  # The flake's outputs, with nixpkgs replaced by the stand-ins.
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (
      hostSystem: import ./pkgs.nix {
        inherit lib;
        system = hostSystem;
      }
    );
  };
  flake = (import ../../flake.nix).outputs {
    self = flake;
    inherit nixpkgs;
  };

  vmNode = (import ../../nix/tests/vm.nix { self = flake; } { }).nodes.machine;

  evaluated = lib.evalModules {
    specialArgs = { inherit pkgs; };
    modules = [
      (import ./nixos.nix { inherit lib pkgs; })
      ./sops.nix
    ]
    ++ (
      if vmTest then
        [ vmNode ]
      else
        [
          flake.nixosModules.default
          (if configModule != null then configModule else builtins.fromJSON configJson)
        ]
    );
  };
  config = evaluated.config;
  # The module's options as the NixOS manual lists them (types, defaults, descriptions).
  optionDocs = map (option: {
    inherit (option) name type description;
    default = option.default.text or null;
  }) (lib.filter (option: option.visible && !option.internal) (lib.optionAttrSetToDocList evaluated.options.services.mail-monitor));
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  # As nixpkgs' systemd-lib renders a section: lists as repeated keys, booleans as true/false.
  toOption =
    value:
    if value == true then
      "true"
    else if value == false then
      "false"
    else
      toString value;
  attrsToSection =
    attrs:
    lib.concatStrings (
      lib.concatLists (
        lib.mapAttrsToList (
          name: value: map (item: "${name}=${toOption item}\n") (if builtins.isList value then value else [ value ])
        ) attrs
      )
    );
  # The [Unit] keys NixOS derives from a unit's options.
  unitConfig =
    unit:
    lib.filterAttrs (_: value: value != "") {
      Description = unit.description;
      Documentation = toString unit.documentation;
      Wants = toString unit.wants;
      After = toString unit.after;
      Before = toString unit.before;
      Requires = toString unit.requires;
    }
    // lib.optionalAttrs (!(unit.restartIfChanged or true)) { X-RestartIfChanged = false; }
    // unit.unitConfig;
  serviceText =
    unit: "[Unit]\n" + attrsToSection (unitConfig unit) + "\n[Service]\n" + attrsToSection unit.serviceConfig;
  timerText = unit: "[Unit]\n" + attrsToSection (unitConfig unit) + "\n[Timer]\n" + attrsToSection unit.timerConfig;

  service = config.systemd.services.mail-monitor;
  execStart = service.serviceConfig.ExecStart;
  configArgument = lib.last (lib.splitString " " execStart);
  node = config.services.prometheus.exporters.node;
in
if failedAssertions != [ ] then
  {
    inherit failedAssertions;
    inherit (config) warnings;
    settings = config.services.mail-monitor.settings or null;
  }
else
  {
    failedAssertions = [ ];
    inherit (config) warnings;
    inherit optionDocs;
    serviceConfig = service.serviceConfig;
    servicePath = map toString service.path;
    timerConfig = config.systemd.timers.mail-monitor.timerConfig;
    serviceUnit = serviceText service;
    timerUnit = timerText config.systemd.timers.mail-monitor;
    timerWantedBy = config.systemd.timers.mail-monitor.wantedBy;
    # The generated TOML (as JSON), or null when it comes from services.mail-monitor.configFile.
    configFile = if lib.hasPrefix builtins.storeDir configArgument then configArgument else null;
    settings = config.services.mail-monitor.settings;
    tmpfiles = config.systemd.tmpfiles.rules;
    users = lib.mapAttrs (_: user: { inherit (user) isSystemUser group; }) config.users.users;
    groups = builtins.attrNames config.users.groups;
    nodeExporterExecStart =
      if node.enable then config.systemd.services.prometheus-node-exporter.serviceConfig.ExecStart else null;
  }
