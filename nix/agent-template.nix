# Configuration of the hyperhive agent "@name@".
# Commit a change here, then `hyperhive propose @name@` submits it for the operator's approval.
{ ... }:
{
}
