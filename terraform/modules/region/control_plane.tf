################################################################################
# Control plane: one instance per region, at the private address the topology
# gives as its DNS listener (dns_host), reachable at a stable Elastic IP (the
# address the DNS delegation's glue records point at)
################################################################################

resource "aws_eip" "control_plane" {
  tags = merge(local.tags, { Name = "${local.name}-cp" })
}

resource "aws_instance" "control_plane" {
  ami                    = local.ami_id
  instance_type          = var.control_plane_instance_type
  subnet_id              = aws_subnet.public[0].id
  private_ip             = local.control_plane.dns_host
  vpc_security_group_ids = [aws_security_group.control_plane.id]
  iam_instance_profile   = aws_iam_instance_profile.control_plane.name
  user_data_base64       = base64gzip(module.cloud_init.control_plane)

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_type = "gp3"
    encrypted   = true
  }

  # The node reads the control plane's secrets and the CA certificate (and the GeoIP
  # database, if any) at boot.
  depends_on = [aws_ssm_parameter.secrets_control_plane, aws_ssm_parameter.tls_ca, aws_iam_role_policy.control_plane, aws_iam_role_policy.geoip]

  tags = merge(local.tags, { Name = "${local.name}-cp", "edgemesh:role" = "control-plane" })

  lifecycle {
    # cloud-init runs once per instance, and provider versions differ on whether new
    # user data replaces or restarts an instance: a new topology or release reaches the
    # control plane by an explicit replacement (docs/terraform.md), as on NATS servers.
    ignore_changes = [ami, user_data, user_data_base64]
  }
}

resource "aws_eip_association" "control_plane" {
  allocation_id = aws_eip.control_plane.id
  instance_id   = aws_instance.control_plane.id
}
