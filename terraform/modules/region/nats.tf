################################################################################
# NATS servers: one instance per server in the topology, spread over the AZs, each
# behind its own Elastic IP (stable across instance replacement; its public DNS
# name is what the server's DNS name points at)
################################################################################

resource "aws_eip" "nats" {
  count = length(local.nats_servers)

  tags = merge(local.tags, { Name = local.nats_servers[count.index].name })
}

resource "aws_instance" "nats" {
  count = length(local.nats_servers)

  ami                    = local.ami_id
  instance_type          = var.nats_instance_type
  subnet_id              = aws_subnet.public[count.index % length(local.azs)].id
  vpc_security_group_ids = [aws_security_group.nats.id]
  iam_instance_profile   = aws_iam_instance_profile.nats.name
  user_data_base64       = base64gzip(module.cloud_init.nats[count.index])

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.nats_volume_size
    encrypted   = true
  }

  # The node reads the NATS servers' secrets and its TLS files at boot.
  depends_on = [aws_ssm_parameter.secrets_nats, aws_ssm_parameter.tls_ca, aws_ssm_parameter.nats_cert, aws_ssm_parameter.nats_key, aws_iam_role_policy.nats]

  tags = merge(local.tags, { Name = local.nats_servers[count.index].name, "edgemesh:role" = "nats" })

  lifecycle {
    # A NATS server holds JetStream data: a new topology or AMI must not replace the
    # whole cluster at once. Roll servers one at a time (docs/terraform.md).
    ignore_changes = [ami, user_data, user_data_base64]
  }
}

resource "aws_eip_association" "nats" {
  count = length(local.nats_servers)

  allocation_id = aws_eip.nats[count.index].id
  instance_id   = aws_instance.nats[count.index].id
}
