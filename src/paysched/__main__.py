from paysched.cli import main

main()
