# The Python dependencies hyperhive builds from their PyPI wheels (nix/package.nix), with
# the registry's URL and sha256 of each file (https://pypi.org/simple/<name>/).
#
# Every direct dependency is here at the exact version pyproject.toml pins (tests/
# test_packaging.py checks that they agree), so the NixOS package runs what CI tests;
# nixpkgs' own versions lag (dulwich 0.2x is older than the 1.2 the code needs). Their
# dependencies come from nixpkgs; one nixpkgs lacked would be pinned here too (none is
# now). `dependencies` names other entries here or python3Packages attributes; `imports`
# are checked at build.
# Builtins only: tests read it with `nix-instantiate --eval`.
{
  apscheduler = {
    version = "3.11.3";
    url = "https://files.pythonhosted.org/packages/42/c9/8638db32514dbb9157b3d82680c6faea89283523edf9ed2415ea3884f2ae/apscheduler-3.11.3-py3-none-any.whl";
    hash = "sha256-u+suwC0j08BqbAftfw85Oa2maA6xIfroCaabtCxTejA=";
    dependencies = [ "tzlocal" ];
    imports = [ "apscheduler" ];
  };
  dulwich = {
    version = "1.2.21";
    url = "https://files.pythonhosted.org/packages/6d/0e/e44bc7c8619596af498738917bb21f8511d0f928f32cae0c4a2ba01fdebd/dulwich-1.2.21-py3-none-any.whl";
    hash = "sha256-MaUiuWEegDKkO4+2lBRpwk5l/08U4EJ5hsWOkMIuFU8=";
    dependencies = [ "urllib3" "typing-extensions" ];
    imports = [ "dulwich" ];
  };
  flask = {
    version = "3.1.3";
    url = "https://files.pythonhosted.org/packages/7f/9c/34f6962f9b9e9c71f6e5ed806e0d0ff03c9d1b0b2340088a0cf4bce09b18/flask-3.1.3-py3-none-any.whl";
    hash = "sha256-9Ly+/BJCkZJfGiZEbaMaUXj5SDhiIzsjwMlqIHAfZww=";
    dependencies = [ "blinker" "click" "itsdangerous" "jinja2" "markupsafe" "werkzeug" ];
    imports = [ "flask" ];
  };
  flask-sock = {
    version = "0.7.0";
    url = "https://files.pythonhosted.org/packages/d8/98/107728ce3f430b5481eb426ccc5e1f7c8ab0bd01eaf231c62a8d528ff721/flask_sock-0.7.0-py3-none-any.whl";
    hash = "sha256-yqxNZ5OSqvAQ0C+rz3PVIBn1va8cnBMexaQoyzSRIEo=";
    dependencies = [ "flask" "simple-websocket" ];
    imports = [ "flask_sock" ];
  };
  flask-wtf = {
    version = "1.3.0";
    url = "https://files.pythonhosted.org/packages/14/d2/97adf2ec7af95522573e6dd5493ee84792d0fbfb2def010c4a581b8d6e5e/flask_wtf-1.3.0-py3-none-any.whl";
    hash = "sha256-3F46TOl/dcR79sHHKtLDt731eaLtE668xdPYH+JXEWA=";
    dependencies = [ "flask" "itsdangerous" "wtforms" ];
    imports = [ "flask_wtf" ];
  };
  gunicorn = {
    version = "27.0.1";
    url = "https://files.pythonhosted.org/packages/f7/46/19ce73424bc4bcac3f0c104950fa776abdfa4515f25104916a62b63b672a/gunicorn-27.0.1-py3-none-any.whl";
    hash = "sha256-N4smuaOK3PRZLyiCgjPBcWrMVegz6ga/SHGXgu+qDRA=";
    dependencies = [ ];
    imports = [ "gunicorn" ];
  };
  pygments = {
    version = "2.21.0";
    url = "https://files.pythonhosted.org/packages/71/46/17f022dd3e953bf20a04a028a21ec746d942f8d2af30fa0f124fa0e6a684/pygments-2.21.0-py3-none-any.whl";
    hash = "sha256-I2PGm2HEqXyDjaOxMNzWRo9ISJkrIagvKmPsNDdxN9k=";
    dependencies = [  ];
    imports = [ "pygments" ];
  };
  unidiff = {
    version = "1.0.1";
    url = "https://files.pythonhosted.org/packages/af/c9/a0529375e0162327fd1cb0dc6785c7a6e56dfae011c2d7b57d611ff84347/unidiff-1.0.1-py3-none-any.whl";
    hash = "sha256-XiykYe2opMdhrQki4+imV0LzWdxgMBo6BVtw/XwVhoA=";
    dependencies = [  ];
    imports = [ "unidiff" ];
  };
}
