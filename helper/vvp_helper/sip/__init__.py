"""What the helper reads from a SIP INVITE: header fields, the VVP identity, replays."""
