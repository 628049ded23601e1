# Stand-in for sops-nix's `sops.secrets`, which docs/nixos.md's example uses: each secret
# has a `path`, by default /run/secrets/NAME, outside the Nix store.
{ lib, ... }:
{
  options.sops.secrets = lib.mkOption {
    type = lib.types.attrsOf (
      lib.types.submodule (
        { name, ... }:
        {
          options.path = lib.mkOption {
            type = lib.types.str;
            default = "/run/secrets/${name}";
          };
        }
      )
    );
    default = { };
  };
}
