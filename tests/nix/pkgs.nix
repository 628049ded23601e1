# A stand-in for nixpkgs' package set: the attribute names nix/package.nix, flake.nix and
# nix/module.nix use, each one a real nixpkgs attribute (pkgs/top-level/all-packages.nix,
# pkgs/development/python-modules/NAME), so a renamed or missing one fails evaluation.
# Derivations are attrsets with a fixed fake store path: nothing is built.
{ lib, system }:

let
  fakeDerivation =
    attrs:
    let
      name = attrs.name or "${attrs.pname}-${attrs.version or "0"}";
    in
    attrs
    // {
      type = "derivation";
      inherit name system;
      outPath = "${builtins.storeDir}/${builtins.substring 0 32 (builtins.hashString "sha256" "${system}-${name}")}-${name}";
    };
  package = pname: fakeDerivation { inherit pname; };

  python3Packages = lib.genAttrs [
    "authres"
    "cryptography"
    "defusedxml"
    "dkimpy"
    "dnspython"
    "hatchling"
    "imapclient"
    "mypy"
    "prometheus-client"
    "publicsuffixlist"
    "pyspf"
    "pytest"
    "pytestCheckHook"
    "requests"
    "tomli-w"
  ] package
  // {
    # Keeps what the package passes, so the tests can read its dependencies back.
    buildPythonApplication =
      args:
      assert lib.isBool args.pyproject;
      fakeDerivation (args // { meta = args.meta or { }; });
  };

  pkgs = lib.genAttrs [ "dovecot" "postfix" "prometheus" "prometheus-node-exporter" "ruff" "nixfmt-rfc-style" ] package // {
    inherit lib python3Packages;
    callPackage = lib.callPackageWith pkgs;
    stdenv.hostPlatform.system = system;
    mkShell = args: fakeDerivation ({ name = "nix-shell"; } // args);
    # nixpkgs' TOML format (pkgs/pkgs-lib/formats.nix): its value type has no null.
    # `generate` writes JSON here; the tests turn it into TOML as json2toml would.
    formats.toml = _: {
      type =
        let
          valueType =
            lib.types.oneOf [
              lib.types.bool
              lib.types.int
              lib.types.float
              lib.types.str
              lib.types.path
              (lib.types.attrsOf valueType)
              (lib.types.listOf valueType)
            ]
            // {
              description = "TOML value";
            };
        in
        valueType;
      generate = name: value: builtins.toFile name (builtins.toJSON value);
    };
  };
in
pkgs
