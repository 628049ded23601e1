# Evaluates flake.nix's outputs with nixpkgs replaced by the stand-ins of pkgs.nix:
# nix/package.nix goes through callPackage, so every nixpkgs attribute it names must
# exist there. Returns the facts the tests compare with pyproject.toml.
{ libPath }:

let
  lib = import (libPath + "/lib");
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  legacyPackages = lib.genAttrs systems (system: import ./pkgs.nix { inherit lib system; });
  flake = (import ../../flake.nix).outputs {
    self = flake;
    nixpkgs = { inherit lib legacyPackages; };
  };
  pnames = map (drv: drv.pname);
in
lib.genAttrs systems (
  system:
  let
    package = flake.packages.${system}.default;
    overlaid = lib.fix (lib.extends flake.overlays.default (_: legacyPackages.${system}));
  in
  {
    inherit (package) pname version;
    inherit (package.meta) mainProgram;
    dependencies = pnames package.dependencies;
    buildSystem = pnames package.build-system;
    nativeCheckInputs = pnames package.nativeCheckInputs;
    app = flake.apps.${system}.default;
    overlayPackage = overlaid.mail-monitor.name;
    devShellInputs = pnames flake.devShells.${system}.default.packages;
    checks = builtins.attrNames flake.checks.${system};
    nixosModules = builtins.attrNames flake.nixosModules;
  }
)
