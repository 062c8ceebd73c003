from activedpo_client.cli import program

program()
